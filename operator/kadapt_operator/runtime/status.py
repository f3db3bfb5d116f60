"""Phase and conditions of an AdaptationJob, derived from its batch/v1 Job and pods.

Pure: takes plain dicts (what the API server returns) and returns what the status should
say; the handlers decide what to do with it. No clocks are read here: ``now`` is passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Condition types and phases (the cross-team contract) live with the status model in api.py.
from kadapt_operator.api import BETTER_THAN_BASELINE as BETTER_THAN_BASELINE
from kadapt_operator.api import BUDGET_EXCEEDED as BUDGET_EXCEEDED
from kadapt_operator.api import CONDITION_TYPES as CONDITION_TYPES
from kadapt_operator.api import CREATED as CREATED
from kadapt_operator.api import FAILED as FAILED
from kadapt_operator.api import PENDING as PENDING
from kadapt_operator.api import PHASES as PHASES
from kadapt_operator.api import QUEUED as QUEUED
from kadapt_operator.api import RESTARTING as RESTARTING
from kadapt_operator.api import RUNNING as RUNNING
from kadapt_operator.api import SUCCEEDED as SUCCEEDED
from kadapt_operator.api import SUSPENDED as SUSPENDED
from kadapt_operator.api import TERMINAL_PHASES as TERMINAL_PHASES
from kadapt_operator.api import AdaptationJobStatus, Condition
from kadapt_operator.k8s import (
    COMPLETION_INDEX,
    CONTROLLER_UID,
    DISRUPTION_TARGET,
    TRAINER_CONTAINER,
    kube_time,
    parse_time,
    pod_gpus,
)
from kadapt_trainer.config import EXIT_STOPPED

TRUE, FALSE = "True", "False"


class Reason(StrEnum):
    """Why a condition has its status: short, CamelCase, stable (alerts match on them)."""

    INVALID_SPEC = "InvalidSpec"
    CHILDREN_CREATED = "ChildrenCreated"
    CHILD_CONFLICT = "ChildConflict"
    WAITING_FOR_JOB = "WaitingForJob"
    PODS_STARTING = "PodsStarting"
    PODS_RUNNING = "PodsRunning"
    IMAGE_PULL_ERROR = "ImagePullError"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    UNSCHEDULABLE = "Unschedulable"
    #: The Job controller cannot create the pods (ResourceQuota, LimitRange, Pod Security): its
    #: ``FailedCreate`` Event on the batch Job says why.
    FAILED_CREATE = "FailedCreate"
    SUSPENDED_BY_USER = "SuspendedByUser"
    BUDGET_EXCEEDED = "BudgetExceeded"
    #: Stopped or held because the namespace spent its budget for the period (the spend ledger).
    NAMESPACE_BUDGET_EXCEEDED = "NamespaceBudgetExceeded"
    WITHIN_BUDGET = "WithinBudget"
    RESUMED = "Resumed"
    WORKER_FAILED = "WorkerFailed"
    DISRUPTED = "Disrupted"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    #: A trainer exited 2 (bad config, data or model; a diverged loss): no restart can fix it.
    BAD_INPUT = "BadInput"
    JOB_COMPLETED = "JobCompleted"
    NOT_RESTARTING = "NotRestarting"
    NOT_FINISHED = "NotFinished"
    IMMUTABLE_FIELD_CHANGED = "ImmutableFieldChanged"
    WAITING_FOR_ADMISSION = "WaitingForAdmission"
    PREEMPTED = "Preempted"
    ADMITTED = "Admitted"
    #: The finished model is no better than always predicting the majority class (issue 12.9).
    NO_BETTER_THAN_BASELINE = "NoBetterThanBaseline"
    BEATS_BASELINE = "BeatsBaseline"
    #: A malformed entry in status (e.g. a bad timestamp in cost.accountedUntil) was repaired or dropped.
    STATUS_REPAIRED = "StatusRepaired"
    #: Succeeded at once from the recorded result of an identical earlier job (GitOps re-apply).
    REUSED_RESULT = "ReusedResult"
    #: Every field of the current spec generation is in effect (SpecApplied=True).
    SPEC_APPLIED = "SpecApplied"


#: The Suspended condition's message per reason the operator suspends a job for.
SUSPEND_MESSAGES: Mapping[str, str] = {
    Reason.BUDGET_EXCEEDED: "suspended: the budget is spent; raise spec.budget to resume",
    Reason.NAMESPACE_BUDGET_EXCEEDED: (
        "suspended: the namespace's budget for the period is spent (see BudgetExceeded); raise the namespace's "
        "entry in namespaceBudgets in the operator config, or wait for the period's reset, to resume"
    ),
}
#: Container waiting reasons that mean the image will not start without a user's fix.
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
#: Container waiting reasons for a container the kubelet cannot even create: a Secret or
#: ConfigMap (or one of their keys) that the pod references is missing.
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
#: Where a pod serves /progress when not on the operator's progress_port: set by runtimes that
#: run several pods on one address (the local test kubelet); cluster pods never carry it.
PROGRESS_PORT_ANNOTATION = "kadapt.dev/progress-port"


@dataclass(frozen=True)
class PodView:
    """What the operator needs from one pod."""

    name: str
    index: int | None
    owner_uid: str | None
    phase: str
    ip: str | None
    exit_code: int | None = None
    disrupted: bool = False
    waiting_reason: str | None = None
    waiting_message: str = ""
    unschedulable_message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    gpus: int = 0
    progress_port: int | None = None

    @property
    def failed(self) -> bool:
        """Terminated with a nonzero exit, or marked Failed by the kubelet."""
        return (self.exit_code is not None and self.exit_code != 0) or self.phase == "Failed"

    @property
    def is_disruption(self) -> bool:
        """Stopped by the platform (preemption, eviction, drain), not by a bug."""
        return self.failed and (self.disrupted or self.exit_code == EXIT_STOPPED)


def _port(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """Summarise a Pod object."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    raw_index = annotations.get(COMPLETION_INDEX, labels.get(COMPLETION_INDEX))
    exit_code = None
    waiting_reason = None
    waiting_message = ""
    started = parse_time(status.get("startTime"))
    finished = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "terminated" in state:
            term = state["terminated"]
            if cs.get("name") == TRAINER_CONTAINER or exit_code is None:
                exit_code = int(term.get("exitCode", 0))
            started = parse_time(term.get("startedAt")) or started
            finished = parse_time(term.get("finishedAt")) or finished
        elif "running" in state:
            started = parse_time(state["running"].get("startedAt")) or started
        elif "waiting" in state:
            waiting_reason = state["waiting"].get("reason")
            waiting_message = state["waiting"].get("message", "")
    return PodView(
        name=str(meta.get("name", "")),
        index=int(raw_index) if raw_index is not None and str(raw_index).isdigit() else None,
        owner_uid=_job_uid(meta),
        phase=str(status.get("phase") or "Pending"),
        ip=status.get("podIP"),
        exit_code=exit_code,
        disrupted=_disrupted(status),
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        unschedulable_message=_unschedulable(status),
        started_at=started,
        finished_at=finished,
        gpus=pod_gpus(pod),
        progress_port=_port(annotations.get(PROGRESS_PORT_ANNOTATION)),
    )


def _job_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid of the Job that owns the pod: the Job controller's label, else the owner reference."""
    uid = (meta.get("labels") or {}).get(CONTROLLER_UID)
    if uid is None:
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"]
        uid = owners[0].get("uid") if owners else None
    return uid


def _disrupted(status: Mapping[str, Any]) -> bool:
    """Whether the platform stopped the pod (DisruptionTarget, or failed evicted/preempted/terminated).

    A pod that failed past its deadline (``DeadlineExceeded``) was not disrupted: the Job's
    activeDeadlineSeconds ended it.
    """
    if any(c.get("type") == DISRUPTION_TARGET and c.get("status") == TRUE for c in status.get("conditions") or []):
        return True
    return status.get("phase") == "Failed" and status.get("reason") in ("Evicted", "Preempting", "Terminated")


def _unschedulable(status: Mapping[str, Any]) -> str | None:
    """The scheduler's message when no node fits the pod; None when it is scheduled or pending otherwise."""
    message = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == FALSE and cond.get("reason") == "Unschedulable":
            message = cond.get("message") or "no node fits the pod"
    return message


@dataclass(frozen=True)
class JobView:
    """What the operator needs from the batch/v1 Job."""

    name: str
    uid: str | None
    suspended: bool
    completions: int
    succeeded: int
    complete: bool
    failed_reason: str | None
    failed_message: str = ""


def job_view(job: Mapping[str, Any]) -> JobView:
    """Summarise a batch/v1 Job object."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    complete = False
    failed_reason = None
    failed_message = ""
    for cond in status.get("conditions") or []:
        if cond.get("status") != TRUE:
            continue
        if cond.get("type") == "Complete":
            complete = True
        elif cond.get("type") == "Failed":
            failed_reason = cond.get("reason") or "Failed"
            failed_message = cond.get("message") or ""
    return JobView(
        name=str(meta.get("name", "")),
        uid=meta.get("uid"),
        suspended=bool(spec.get("suspend")),
        completions=int(spec.get("completions") or 1),
        succeeded=int(status.get("succeeded") or 0),
        complete=complete,
        failed_reason=failed_reason,
        failed_message=failed_message,
    )


class Verdict(StrEnum):
    """What the Job's pods say must happen next."""

    NONE = "none"
    SUCCEEDED = "succeeded"
    WORKER_FAILED = "worker-failed"
    DISRUPTED = "disrupted"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class CondUpdate:
    """One condition as it should be now."""

    type: str
    status: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Observation:
    """Phase, conditions and the next action, as read from the children."""

    phase: str
    conditions: tuple[CondUpdate, ...]
    verdict: Verdict = Verdict.NONE
    message: str = ""
    failed_pods: tuple[str, ...] = field(default_factory=tuple)


def current_pods(pods: Iterable[PodView], job: JobView | None) -> list[PodView]:
    """Pods of this incarnation of the Job (a restarted gang leaves old pods behind)."""
    if job is None:
        return []
    return sorted((p for p in pods if p.owner_uid == job.uid), key=lambda p: (p.index is None, p.index, p.name))


def observe(
    job: JobView | None,
    pods: Sequence[PodView],
    *,
    workers: int,
    suspend_reason: str | None,
    resumed_at: datetime | None = None,
) -> Observation:
    """Read the state of one incarnation of the gang.

    ``suspend_reason`` is why the operator wants the Job suspended (user, budget), or None.
    Pods stopped by a suspension are not failures: while suspended nothing counts, and pods
    that ended before ``resumed_at`` (the last resume) are ignored afterwards.
    """
    mine = [
        p
        for p in current_pods(pods, job)
        if not (resumed_at is not None and p.finished_at is not None and p.finished_at <= resumed_at)
    ]
    if job is None:
        return Observation(PENDING, (CondUpdate(RUNNING, FALSE, Reason.WAITING_FOR_JOB, "the Job is not created yet"),))
    if job.complete or (job.completions and job.succeeded >= job.completions):
        return Observation(
            SUCCEEDED,
            (
                CondUpdate(RUNNING, FALSE, Reason.JOB_COMPLETED, "all workers finished"),
                CondUpdate(SUCCEEDED, TRUE, Reason.JOB_COMPLETED, "training finished; output written"),
            ),
            Verdict.SUCCEEDED,
        )
    if job.suspended or suspend_reason:
        reason = suspend_reason or Reason.SUSPENDED_BY_USER
        msg = SUSPEND_MESSAGES.get(reason, "suspended by spec.runPolicy.suspend; set it to false to resume")
        return Observation(
            SUSPENDED,
            (
                CondUpdate(SUSPENDED, TRUE, reason, msg),
                CondUpdate(RUNNING, FALSE, reason, "pods stopped; checkpoint kept"),
            ),
        )
    failed = [p for p in mine if p.failed]
    if failed:
        real = [p for p in failed if not p.is_disruption]
        names = tuple(p.name for p in (real or failed))
        if real:
            detail = ", ".join(f"{p.name} exited {p.exit_code}" for p in real)
            return Observation(
                RESTARTING,
                (CondUpdate(RUNNING, FALSE, Reason.WORKER_FAILED, detail),),
                Verdict.WORKER_FAILED,
                detail,
                names,
            )
        detail = ", ".join(f"{p.name} was disrupted" for p in failed)
        return Observation(
            RESTARTING, (CondUpdate(RUNNING, FALSE, Reason.DISRUPTED, detail),), Verdict.DISRUPTED, detail, names
        )
    if job.failed_reason == "DeadlineExceeded":
        return Observation(
            FAILED,
            (CondUpdate(RUNNING, FALSE, Reason.DEADLINE_EXCEEDED, job.failed_message),),
            Verdict.DEADLINE,
            job.failed_message or "the Job ran past its deadline",
        )
    if job.failed_reason is not None:
        msg = job.failed_message or f"the Job failed ({job.failed_reason})"
        return Observation(
            RESTARTING, (CondUpdate(RUNNING, FALSE, Reason.WORKER_FAILED, msg),), Verdict.WORKER_FAILED, msg
        )
    broken = [p for p in mine if p.waiting_reason in CONFIG_ERROR_REASONS]
    if broken:
        p = broken[0]
        msg = (f"pod {p.name}: {p.waiting_reason}: {p.waiting_message}; create the Secret or ConfigMap it names "
               "in the job's namespace (spec.model.secretRef, image pull secrets)").replace(": ;", ";")
        return Observation(CREATED, (CondUpdate(RUNNING, FALSE, Reason.CREATE_CONTAINER_CONFIG_ERROR, msg),))
    pulls = [p for p in mine if p.waiting_reason in IMAGE_PULL_REASONS]
    if pulls:
        p = pulls[0]
        msg = f"pod {p.name}: {p.waiting_reason}: {p.waiting_message}".rstrip(": ")
        return Observation(CREATED, (CondUpdate(RUNNING, FALSE, Reason.IMAGE_PULL_ERROR, msg),))
    unsched = [p for p in mine if p.unschedulable_message]
    if unsched:
        p = unsched[0]
        msg = f"pod {p.name} cannot be scheduled: {p.unschedulable_message}"
        return Observation(CREATED, (CondUpdate(RUNNING, FALSE, Reason.UNSCHEDULABLE, msg),))
    running = [p for p in mine if p.phase == "Running"]
    if workers and len(running) >= workers:
        return Observation(
            RUNNING, (CondUpdate(RUNNING, TRUE, Reason.PODS_RUNNING, f"{len(running)}/{workers} pods running"),)
        )
    return Observation(
        CREATED, (CondUpdate(RUNNING, FALSE, Reason.PODS_STARTING, f"{len(running)}/{workers} pods running"),)
    )


def set_conditions(
    old: Sequence[Condition], updates: Iterable[CondUpdate], *, now: datetime, generation: int | None
) -> list[Condition]:
    """Merge ``updates`` into ``old``: lastTransitionTime moves only when ``status`` changes.

    Conditions keep the contract's order (Created, Running, ...), so equal inputs give
    equal lists and the status is patched only when something really changed.
    """
    by_type: dict[str, Condition] = {c.type: c for c in old}
    for up in updates:
        prev = by_type.get(up.type)
        moved = prev is None or prev.status != up.status
        by_type[up.type] = Condition(
            type=up.type,
            status=up.status,
            reason=str(up.reason),
            message=up.message,
            last_transition_time=kube_time(now) if moved or prev is None else prev.last_transition_time,
            observed_generation=generation,
        )
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(by_type.values(), key=lambda c: (order.get(c.type, len(order)), c.type))


def condition(status: AdaptationJobStatus, type_: str) -> Condition | None:
    """The condition of ``type_``, if any."""
    for c in status.conditions:
        if c.type == type_:
            return c
    return None


def is_true(status: AdaptationJobStatus, type_: str) -> bool:
    """Whether the condition ``type_`` is present and True."""
    c = condition(status, type_)
    return c is not None and c.status == TRUE


def transitions(old: Sequence[Condition], new: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason differs from ``old``: each deserves an Event."""
    before = {c.type: (c.status, c.reason) for c in old}
    return [c for c in new if before.get(c.type) != (c.status, c.reason)]


def restart_delay(restarts: int, base: float, maximum: float) -> float:
    """Exponential backoff before restart number ``restarts`` (1-based): base, 2 base, 4 base ..., capped."""
    if restarts <= 0:
        return 0.0
    return float(min(maximum, base * (2 ** (restarts - 1))))
