"""Kubernetes Events on the AdaptationJob, one per transition (``kubectl describe`` shows them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from kadapt_operator import cost as costing
from kadapt_operator.runtime.status import TRUE, Reason

log = logging.getLogger("kadapt.operator")

NORMAL = "Normal"
WARNING = "Warning"

#: Reasons that need a person's attention.
WARNING_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.CHILD_CONFLICT,
        Reason.IMAGE_PULL_ERROR,
        Reason.UNSCHEDULABLE,
        Reason.BUDGET_EXCEEDED,
        Reason.WORKER_FAILED,
        Reason.DISRUPTED,
        Reason.BACKOFF_LIMIT_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.IMMUTABLE_FIELD_CHANGED,
        costing.REASON_MAX_COST,
        costing.REASON_MAX_GPU_HOURS,
        costing.REASON_NAMESPACE_BUDGET,
    }
)


def event_type(reason: str) -> str:
    """Warning for reasons that need attention, Normal for the rest."""
    return WARNING if reason in WARNING_REASONS else NORMAL


def post(body: Mapping[str, Any], reason: str, message: str) -> None:
    """Queue an Event on the object (kopf posts it in the background, never blocking the handler)."""
    ref = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: body.get("metadata", {}).get(k) for k in ("name", "namespace", "uid")},
    }
    try:
        kopf.event(
            cast(kopf.Body, ref), type=event_type(reason), reason=str(reason), message=message[:1024] or str(reason)
        )
    except LookupError:  # outside kopf's context (no Event queue): the status still says it
        name = (body.get("metadata") or {}).get("name")
        log.warning("event %s on %s not posted: no event queue in this context", reason, name)


#: False conditions worth an Event: the way back to normal.
RECOVERY_REASONS = frozenset({Reason.RESUMED, Reason.WITHIN_BUDGET})


def post_transitions(body: Mapping[str, Any], changed: list[dict[str, Any]]) -> None:
    """One Event per condition that became True, went wrong, or recovered (not every False)."""
    for cond in changed:
        status = cond.get("status")
        reason = str(cond.get("reason"))
        if status == TRUE or reason in WARNING_REASONS or reason in RECOVERY_REASONS:
            post(body, reason, f"{cond['type']}={status}: {cond.get('message') or ''}".rstrip(": "))
