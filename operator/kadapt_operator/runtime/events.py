"""Kubernetes Events on the AdaptationJob, one per transition (``kubectl describe`` shows them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import kopf

from kadapt_operator import cost as costing
from kadapt_operator.api import API_VERSION_FULL, Condition
from kadapt_operator.runtime.readiness import KSTATUS_TYPES
from kadapt_operator.runtime.status import TRUE, Reason
from kadapt_operator.runtime.stored import StoredMeta
from kadapt_trainer.config import KIND

log = logging.getLogger("kadapt.operator")

NORMAL = "Normal"
WARNING = "Warning"

#: Reasons that need a person's attention.
WARNING_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.CHILD_CONFLICT,
        Reason.IMAGE_PULL_ERROR,
        Reason.CREATE_CONTAINER_CONFIG_ERROR,
        Reason.UNSCHEDULABLE,
        Reason.FAILED_CREATE,
        Reason.STATUS_REPAIRED,
        Reason.BUDGET_EXCEEDED,
        Reason.WORKER_FAILED,
        Reason.DISRUPTED,
        Reason.BACKOFF_LIMIT_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.BAD_INPUT,
        Reason.IMMUTABLE_FIELD_CHANGED,
        Reason.NO_BETTER_THAN_BASELINE,
        costing.REASON_MAX_COST,
        costing.REASON_MAX_GPU_HOURS,
        costing.REASON_NAMESPACE_BUDGET,
        costing.REASON_UNKNOWN_GPU_TYPE,
    }
)


def event_type(reason: str) -> str:
    """Warning for reasons that need attention, Normal for the rest."""
    return WARNING if reason in WARNING_REASONS else NORMAL


def post(meta: StoredMeta, reason: str, message: str) -> None:
    """Queue an Event on the AdaptationJob (kopf posts it in the background, never blocking the handler)."""
    ref = {
        "apiVersion": API_VERSION_FULL,
        "kind": KIND,
        "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
    }
    try:
        kopf.event(
            cast(kopf.Body, ref), type=event_type(reason), reason=str(reason), message=message[:1024] or str(reason)
        )
    except LookupError:  # outside kopf's context (no Event queue): the status still says it
        log.warning("event %s on %s not posted: no event queue in this context", reason, meta.name)


#: False conditions worth an Event: the way back to normal.
RECOVERY_REASONS = frozenset({Reason.RESUMED, Reason.WITHIN_BUDGET})


def worth_an_event(changed: Sequence[Condition]) -> list[Condition]:
    """The conditions among ``changed`` (one status write's transitions) that each get one Event.

    A condition that became True, went wrong, or recovered does (not every False). The kstatus
    conditions (Ready, Reconciling, Stalled) never do: they are derived from the condition that
    moved (an image pull error makes Running=False *and* Stalled=True, Ready and Reconciling
    False with the same reason), which has its Event already. Nor does a False condition that
    moved for the reason a True one moved for in the same write: it is the other side of that
    transition (a deadline sets Failed=True and Running=False, both DeadlineExceeded: one Event).
    """
    worthy = [
        c for c in changed
        if c.type not in KSTATUS_TYPES
        and (c.status == TRUE or c.reason in WARNING_REASONS or c.reason in RECOVERY_REASONS)
    ]
    told = {c.reason for c in worthy if c.status == TRUE}
    out: list[Condition] = []
    for cond in worthy:
        if cond.status != TRUE:
            if cond.reason in told:
                continue
            told.add(cond.reason)
        out.append(cond)
    return out


def post_transitions(meta: StoredMeta, changed: Sequence[Condition]) -> None:
    """One Event per transition among ``changed`` (see :func:`worth_an_event`)."""
    for cond in worth_an_event(changed):
        post(meta, cond.reason, f"{cond.type}={cond.status}: {cond.message}".rstrip(": "))


def post_repairs(meta: StoredMeta, problems: Sequence[str]) -> None:
    """One Warning Event naming every malformed status entry that was repaired or dropped.

    The reconcile repairs such an entry instead of failing on it every tick; the Event says
    what was changed, so that someone who hand-edited the status (or an old operator's bug)
    can see that the figures around it may be off by one poll.
    """
    if problems:
        post(meta, Reason.STATUS_REPAIRED, "repaired malformed status: " + "; ".join(problems))
