"""The reconcile's decisions, as pure functions: observations in, decisions out.

Nothing here reads a clock, calls the API server or touches metrics: each function takes
what a reconcile step observed (the spec, the status as stored, the children, ``now``)
and returns what should happen. The steps in :mod:`kadapt_operator.runtime.reconcile`
gather the observations and carry the decisions out, so every branch of the restart,
suspension and budget logic is unit-tested table by table without kopf or an API server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from kadapt_operator import cost as costing
from kadapt_operator import k8s
from kadapt_operator.api import AdaptationJobStatus, Condition
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.termination import Termination


class Trigger(StrEnum):
    """What woke the reconcile up: decides which optional steps run."""

    SPEC = "spec"
    CHILDREN = "children"
    TICK = "tick"


# -- budget and suspension -------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetInputs:
    """What the budget decision looks at, all read before it is made."""

    job_budget: costing.BudgetDecision
    #: The namespace budget's verdict from its spend ledger; None when the namespace has no budget.
    namespace_budget: costing.BudgetDecision | None
    #: The stored BudgetExceeded condition, if any.
    held: Condition | None
    #: Whether the job's spec sets a budget (then BudgetExceeded=False is shown too).
    has_budget: bool
    user_suspend: bool
    trigger: Trigger
    #: The namespace has a budget but its ledger could not be read: keep a namespace hold as it is.
    namespace_unknown: bool = False


@dataclass(frozen=True)
class BudgetOutcome:
    """The budget verdict, why the Job should be suspended (or None), and the condition to set."""

    decision: costing.BudgetDecision
    suspend_reason: str | None
    condition: st.CondUpdate | None
    #: True when this reconcile is the one that stopped the job (count it once in metrics).
    newly_exceeded: bool


def decide_budget(inputs: BudgetInputs) -> BudgetOutcome:
    """Whether a budget holds the job, and whether the user or the budget suspends it.

    While its namespace has spent its budget for the period, a job is held (a new one) or
    stopped (a running one), whatever it has spent itself. A stop by the job's own budget is
    lifted only by a spec change (a raised ``spec.budget``): pod events and ticks keep it, or
    the headroom the tick adds would suspend and resume the job by turns. A stop by the
    namespace budget is judged again on every trigger, since what lifts it is not in the spec:
    the period's reset, or a raised ``namespaceBudgets`` entry (no headroom there, so no
    flapping); only a ledger that cannot be read keeps it as it is.
    """
    decision = inputs.job_budget
    if not decision.exceeded and inputs.namespace_budget is not None:
        decision = inputs.namespace_budget
    held = inputs.held
    held_true = held is not None and held.status == st.TRUE
    by_namespace = held is not None and held.reason == costing.REASON_NAMESPACE_BUDGET
    keep = inputs.namespace_unknown if by_namespace else inputs.trigger != Trigger.SPEC
    if not decision.exceeded and held is not None and held_true and keep:
        decision = costing.BudgetDecision(True, held.reason, held.message)
    if inputs.user_suspend:
        suspend_reason: str | None = st.Reason.SUSPENDED_BY_USER
    elif decision.exceeded and decision.reason == costing.REASON_NAMESPACE_BUDGET:
        suspend_reason = st.Reason.NAMESPACE_BUDGET_EXCEEDED
    elif decision.exceeded:
        suspend_reason = st.Reason.BUDGET_EXCEEDED
    else:
        suspend_reason = None
    condition: st.CondUpdate | None = None
    if decision.exceeded:
        condition = st.CondUpdate(st.BUDGET_EXCEEDED, st.TRUE, decision.reason, decision.message)
    elif held is not None or inputs.has_budget:
        condition = st.CondUpdate(st.BUDGET_EXCEEDED, st.FALSE, decision.reason, decision.message)
    return BudgetOutcome(decision, suspend_reason, condition, decision.exceeded and not held_true)


# -- children --------------------------------------------------------------------------------
class ChildAction(StrEnum):
    """What to do with the gang's children this reconcile."""

    KEEP = "keep"
    CREATE = "create"
    #: Create again after a restart's backoff (and clear the restart-after mark).
    RECREATE = "recreate"
    #: Wait: the failed incarnation is still being deleted.
    WAIT_FOR_DELETION = "wait-for-deletion"
    SET_SUSPEND = "set-suspend"
    #: Delete the Job of a queued job to stop it (Kueue owns its ``suspend``).
    STOP = "stop"


def decide_children(
    *,
    job_exists: bool,
    job_suspended: bool,
    want_suspend: bool,
    restart_after: datetime | None,
    old_incarnation_listed: bool,
    trigger: Trigger,
    now: datetime,
    queued: bool = False,
) -> ChildAction:
    """Create missing children on any trigger, recreate them once a restart's backoff is over.

    Level-triggered: a Job deleted underneath a live job is created again by whatever
    reconcile comes next (a pod event, a tick), not only by a spec change. A Job that exists
    only has its ``suspend`` aligned with what the operator wants, except a queued one
    (``queued``): Kueue alone unsuspends it, so the operator never touches its ``suspend``
    and stops it by deleting it (:mod:`kadapt_operator.runtime.queueing`).
    """
    if job_exists:
        if queued:
            return ChildAction.STOP if want_suspend else ChildAction.KEEP
        return ChildAction.SET_SUSPEND if job_suspended != want_suspend else ChildAction.KEEP
    if queued and want_suspend:
        return ChildAction.KEEP
    if restart_after is None:
        return ChildAction.CREATE
    if now < restart_after:
        return ChildAction.KEEP
    return ChildAction.WAIT_FOR_DELETION if old_incarnation_listed else ChildAction.RECREATE


def resumed_at(suspended: Condition | None, *, suspending: bool, now: datetime) -> datetime | None:
    """Since when pods' ends no longer count as failures: the last resume (or now, when resuming).

    Pods stopped by a suspension are not failures, even after the resume.
    """
    if suspended is None:
        return None
    if suspended.status == st.TRUE:
        return None if suspending else now
    if suspended.status == st.FALSE:
        return suspended.last_transition_time
    return None


# -- pods the Job controller cannot create ---------------------------------------------------
#: The Job controller's Event reason when the API server refuses a pod (ResourceQuota, LimitRange,
#: Pod Security admission, a webhook): the only place that says why a Job has no pods.
FAILED_CREATE_EVENT = "FailedCreate"


def pods_missing(job: st.JobView | None, current_pods: int, workers: int, observation: st.Observation) -> bool:
    """Whether the gang is short of pods the Job controller should have created (then read its Events).

    Only for a live, unsuspended, unfinished Job whose observation is still "starting": a
    failed, suspended or queued gang has its own explanation, and a full gang needs none.
    """
    if job is None or job.suspended or job.complete or job.failed_reason is not None:
        return False
    return observation.phase == st.CREATED and observation.verdict == st.Verdict.NONE and current_pods < workers


#: Seconds a Job may be short of pods before its Events are read: the Job controller creates a
#: gang's pods within about a second, so a healthy start never costs a list request.
FAILED_CREATE_GRACE_SECONDS = 3.0


class CreationCheck(StrEnum):
    """What a reconcile does about a gang that is short of pods."""

    #: Nothing: the gang is complete, or it is not this check's business.
    NONE = "none"
    #: Keep the FailedCreate condition the status already shows (no request: only ticks read Events).
    KEEP = "keep"
    #: List the Job's Events for a FailedCreate.
    READ = "read"


def creation_check(
    missing: bool, *, trigger: Trigger, job_age_seconds: float | None, shown: Condition | None
) -> CreationCheck:
    """Whether to read the Job's Events now, keep what the status says, or neither.

    Events are read on ticks only, and only once the Job is older than
    :data:`FAILED_CREATE_GRACE_SECONDS`: a burst of pod and Job events, or thousands of jobs
    starting at once, cost no list requests. Between ticks a FailedCreate already shown stays
    (``shown``, the stored Running condition), so that pod events do not flip it back and forth.
    """
    if not missing:
        return CreationCheck.NONE
    old_enough = job_age_seconds is not None and job_age_seconds >= FAILED_CREATE_GRACE_SECONDS
    if trigger == Trigger.TICK and old_enough:
        return CreationCheck.READ
    showing = shown is not None and shown.status == st.FALSE and shown.reason == st.Reason.FAILED_CREATE
    return CreationCheck.KEEP if showing else CreationCheck.NONE


def _event_time(event: Mapping[str, Any]) -> datetime:
    series = event.get("series") or {}
    meta = event.get("metadata") or {}
    for raw in (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
                event.get("firstTimestamp"), meta.get("creationTimestamp")):
        try:
            parsed = k8s.parse_time(raw)
        except (TypeError, ValueError):
            continue
        if parsed is not None:
            return parsed
    return datetime.min.replace(tzinfo=UTC)


def failed_create(events: Iterable[Mapping[str, Any]], job: st.JobView) -> st.CondUpdate | None:
    """``Running=False`` (reason FailedCreate) from the newest FailedCreate Event on this Job, or None.

    Only Events about this incarnation of the Job count (its uid, when the Event names one):
    a deleted namesake's refusals are not this gang's.
    """
    mine = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("reason") != FAILED_CREATE_EVENT or involved.get("kind") != "Job":
            continue
        if involved.get("name") != job.name or (involved.get("uid") and job.uid and involved.get("uid") != job.uid):
            continue
        mine.append(event)
    if not mine:
        return None
    latest = max(mine, key=_event_time)
    cause = str(latest.get("message") or "no message").strip()
    msg = (
        f"the Job controller cannot create the pods of Job {job.name}: {cause}; fix what refuses them "
        "(the namespace's ResourceQuota or LimitRange, Pod Security admission, or the job's resources): "
        "the Job controller keeps retrying"
    )
    return st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.FAILED_CREATE, msg)


# -- outcome: success, deadline, restart -----------------------------------------------------
class Outcome(StrEnum):
    """What the observation of the gang means for the job."""

    CONTINUE = "continue"
    SUCCEEDED = "succeeded"
    DEADLINE = "deadline"
    #: A trainer exited 2 (bad input): fail now, never restart the gang.
    BAD_INPUT = "bad-input"
    RESTART = "restart"
    #: The gang was stopped after a failure and waits for its backoff.
    WAITING_TO_RESTART = "waiting-to-restart"


#: Phases in which ``activeDeadlineSeconds`` does not run: the user, a budget or Kueue holds the job.
DEADLINE_PAUSED_PHASES = frozenset({st.SUSPENDED, st.QUEUED})


@dataclass(frozen=True)
class DeadlineClock:
    """Time since the first running pod that ``activeDeadlineSeconds`` does not count.

    Kept in the API server (annotations, see :mod:`kadapt_operator.runtime.deadline`), so a
    restarted operator neither forgets a past suspension nor loses the one in progress.
    """

    #: Seconds of finished pauses (suspended or queued after the start).
    paused_seconds: float = 0.0
    #: When the pause in progress began; None while the clock runs.
    paused_since: datetime | None = None

    def paused_at(self, now: datetime) -> float:
        """Seconds excluded from the deadline up to ``now``, the pause in progress included."""
        current = (now - self.paused_since).total_seconds() if self.paused_since is not None else 0.0
        return self.paused_seconds + max(current, 0.0)


def track_deadline(clock: DeadlineClock, *, started: bool, phase: str, now: datetime) -> DeadlineClock:
    """Stop the deadline's clock when a started job is suspended or queued, run it again after.

    Before the first running pod nothing counts anyway (``started`` False). A suspension by
    the user or a budget, or a Kueue preemption that re-queues the job, stops the clock at
    ``now`` (the reconcile that sees it); the first reconcile in any other phase adds the
    pause to ``paused_seconds``. The wait for pods after a resume counts, like a restart's.
    """
    if not started:
        return clock
    paused = phase in DEADLINE_PAUSED_PHASES
    if paused and clock.paused_since is None:
        return DeadlineClock(clock.paused_seconds, now)
    if not paused and clock.paused_since is not None:
        return DeadlineClock(round(clock.paused_at(now), 3), None)
    return clock


def deadline_passed(
    deadline_seconds: int | None, started: datetime | None, now: datetime, clock: DeadlineClock | None = None
) -> bool:
    """Whether ``spec.runPolicy.activeDeadlineSeconds`` has run out since ``started``, pauses excluded."""
    if deadline_seconds is None or started is None:
        return False
    paused = clock.paused_at(now) if clock is not None else 0.0
    return (now - started).total_seconds() - paused >= deadline_seconds


def decide_outcome(
    verdict: st.Verdict,
    *,
    deadline_passed: bool,
    job_exists: bool,
    restart_pending: bool,
    bad_input: bool = False,
) -> Outcome:
    """The job's next move from the gang's verdict, the deadline and a pending restart.

    A pod of the current gang that ended with bad input (``bad_input``) fails the job before
    anything else is weighed: a restart would repeat it on a new GPU start, and the peers'
    exit 1 on the broken rendezvous that follows must not turn it into a restart either.
    """
    if verdict == st.Verdict.SUCCEEDED:
        return Outcome.SUCCEEDED
    if bad_input:
        return Outcome.BAD_INPUT
    if verdict == st.Verdict.DEADLINE or deadline_passed:
        return Outcome.DEADLINE
    if verdict in (st.Verdict.WORKER_FAILED, st.Verdict.DISRUPTED) and job_exists:
        return Outcome.RESTART
    if not job_exists and restart_pending:
        return Outcome.WAITING_TO_RESTART
    return Outcome.CONTINUE


@dataclass(frozen=True)
class RestartPlan:
    """A failure or disruption handled: give up, or restart after ``delay_seconds``."""

    give_up: bool
    restarts: int
    disruptions: int
    delay_seconds: float
    condition_reason: str
    message: str
    #: True for a worker failure (counts against backoffLimit), False for a disruption.
    worker_failure: bool = True


def decide_restart(
    verdict: st.Verdict,
    *,
    restarts: int,
    disruptions: int,
    backoff_limit: int,
    backoff_seconds: float,
    backoff_max_seconds: float,
    detail: str,
) -> RestartPlan:
    """Count a worker failure against ``backoffLimit`` (with backoff) or a disruption (free, at once)."""
    if verdict == st.Verdict.WORKER_FAILED and restarts >= backoff_limit:
        msg = f"{detail}; spec.runPolicy.backoffLimit ({backoff_limit}) restarts used up"
        return RestartPlan(True, restarts, disruptions, 0.0, st.Reason.BACKOFF_LIMIT_EXCEEDED, msg)
    if verdict == st.Verdict.WORKER_FAILED:
        restarts += 1
        delay = st.restart_delay(restarts, backoff_seconds, backoff_max_seconds)
        reason: str = st.Reason.WORKER_FAILED
        what = f"restart {restarts}/{backoff_limit} after a worker failure"
    else:
        disruptions += 1
        delay = 0.0
        reason = st.Reason.DISRUPTED
        what = f"disruption {disruptions} (not counted against backoffLimit)"
    msg = f"{what}: {detail}; the gang restarts from the latest checkpoint in {delay:g}s"
    return RestartPlan(False, restarts, disruptions, delay, reason, msg, verdict == st.Verdict.WORKER_FAILED)


def restart_conditions(plan: RestartPlan) -> list[st.CondUpdate]:
    """The conditions a restart plan sets."""
    if plan.give_up:
        return [
            st.CondUpdate(st.FAILED, st.TRUE, plan.condition_reason, plan.message),
            st.CondUpdate(st.RESTARTING, st.FALSE, plan.condition_reason, plan.message),
        ]
    return [st.CondUpdate(st.RESTARTING, st.TRUE, plan.condition_reason, plan.message)]


def deadline_conditions(deadline_seconds: int | None, paused_seconds: float = 0.0) -> list[st.CondUpdate]:
    """Failed and not Running, naming the deadline (and the suspended or queued time it left out)."""
    excluded = f", not counting {paused_seconds:.0f}s suspended or queued" if paused_seconds >= 1 else ""
    msg = f"ran longer than spec.runPolicy.activeDeadlineSeconds ({deadline_seconds}s{excluded}); pods stopped"
    return [
        st.CondUpdate(st.FAILED, st.TRUE, st.Reason.DEADLINE_EXCEEDED, msg),
        st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.DEADLINE_EXCEEDED, msg),
    ]


def bad_input_conditions(termination: Termination) -> list[st.CondUpdate]:
    """Failed and not Running, with the trainer's one-line cause (from its termination message)."""
    msg = (
        f"{termination.cause} (pod {termination.pod}, exit code {termination.exit_code}: "
        "bad input, which no restart can fix; the gang was not restarted)"
    )
    return [
        st.CondUpdate(st.FAILED, st.TRUE, st.Reason.BAD_INPUT, msg),
        st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.BAD_INPUT, msg),
    ]


def waiting_conditions(updates: list[st.CondUpdate]) -> list[st.CondUpdate]:
    """While the gang waits for its backoff, Running says so (replacing what the pods said)."""
    kept = [u for u in updates if u.type != st.RUNNING]
    return [*kept, st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.WORKER_FAILED, "waiting to restart the gang")]


def settle_conditions(phase: str, old_status: AdaptationJobStatus) -> list[st.CondUpdate]:
    """Conditions the new phase ends: Restarting, Suspended (a resume) and Failed=False on success."""
    out: list[st.CondUpdate] = []
    if phase != st.RESTARTING and st.condition(old_status, st.RESTARTING) is not None:
        out.append(st.CondUpdate(st.RESTARTING, st.FALSE, st.Reason.NOT_RESTARTING, "the gang is up"))
    if phase != st.SUSPENDED and st.is_true(old_status, st.SUSPENDED):
        out.append(st.CondUpdate(st.SUSPENDED, st.FALSE, st.Reason.RESUMED, "resumed from the last checkpoint"))
    if phase == st.SUCCEEDED and st.condition(old_status, st.FAILED) is None:
        out.append(st.CondUpdate(st.FAILED, st.FALSE, st.Reason.JOB_COMPLETED, "finished without failing"))
    return out


def expired(ttl_seconds: int | None, completed: datetime | None, now: datetime) -> bool:
    """Whether ``ttlSecondsAfterFinished`` has passed since the job finished."""
    return ttl_seconds is not None and completed is not None and now >= completed + timedelta(seconds=ttl_seconds)
