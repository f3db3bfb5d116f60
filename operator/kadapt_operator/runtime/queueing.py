"""Kueue: a queued AdaptationJob's batch Job waits suspended, and only Kueue unsuspends it.

Kueue's contract for ``batch/v1`` Jobs: a Job labelled ``kueue.x-k8s.io/queue-name`` is
suspended until Kueue admits its Workload, then Kueue sets ``spec.suspend: false``; to
preempt it, Kueue suspends it again. Kueue also unsuspends an admitted Job that someone
else suspended, so another controller must never toggle ``suspend`` on such a Job:

* the operator creates the Job of a queued job suspended, and never unsuspends it;
* to stop a queued job (the user's ``spec.runPolicy.suspend``, a budget), it deletes the
  Job, which releases the quota (Kueue deletes the Workload with it); the pods checkpoint
  on SIGTERM as in any suspension, and a resume creates the Job again, suspended, queued;
* a Job that Kueue holds suspended shows phase ``Queued``, naming the LocalQueue;
* a Job that Kueue suspends after it ran (a preemption) is a disruption: the checkpoint is
  kept, ``backoffLimit`` is not touched, and Kueue's next admission resumes it.

Pure: the reconcile's steps call these with what they observed.
"""

from __future__ import annotations

from dataclasses import dataclass

from kadapt_operator.api import AdaptationJobStatus, Condition
from kadapt_operator.runtime import status as st

#: Phases after which a Job that Kueue suspends has been preempted (it had been admitted).
_ADMITTED_PHASES = frozenset({st.CREATED, st.RUNNING, st.RESTARTING})


def _condition(status: AdaptationJobStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def queue_name(spec_queue: str | None, default_queue: str | None) -> str | None:
    """The LocalQueue the job's batch Job is labelled with, if any."""
    return spec_queue or default_queue


@dataclass(frozen=True)
class QueueObservation:
    """What Kueue's hold on the Job means for the status: a phase override and conditions."""

    #: Queued or Suspended when Kueue's hold (or a queued stop) decides the phase; None otherwise.
    phase: str | None
    conditions: tuple[st.CondUpdate, ...] = ()
    #: Kueue suspended a Job that had been admitted: count one disruption.
    preempted: bool = False


_STOPPED = st.JobView(name="", uid=None, suspended=True, completions=1, succeeded=0, complete=False, failed_reason=None)


def observe_queue(
    queue: str | None,
    job: st.JobView | None,
    *,
    suspend_reason: str | None,
    old_status: AdaptationJobStatus,
) -> QueueObservation:
    """Read Kueue's hold on the job's batch Job.

    Args:
        queue: the job's LocalQueue (None: not queued, nothing to read).
        job: the current batch Job (None: not created, or deleted for a stop).
        suspend_reason: why the operator wants the job stopped (user, budget), or None.
        old_status: the status as stored (its phase tells a preemption from a first wait).
    """
    if queue is None:
        return QueueObservation(None)
    if suspend_reason is not None and job is None:
        # A queued job is stopped by deleting its Job: read it as a suspension.
        obs = st.observe(_STOPPED, [], workers=1, suspend_reason=suspend_reason)
        return QueueObservation(st.SUSPENDED, obs.conditions)
    if job is None or suspend_reason is not None:
        return QueueObservation(None)
    if job.suspended and not job.complete:
        preempted = old_status.phase in _ADMITTED_PHASES
        held = _condition(old_status, st.QUEUED)
        if preempted or (held is not None and held.status == st.TRUE and held.reason == st.Reason.PREEMPTED):
            why: str = st.Reason.PREEMPTED
            msg = (
                f"preempted by Kueue in LocalQueue {queue}; the checkpoint is kept and the job resumes "
                "from it when Kueue admits it again (not counted against backoffLimit)"
            )
        else:
            why = st.Reason.WAITING_FOR_ADMISSION
            msg = f"waiting for Kueue to admit the Job in LocalQueue {queue}"
        return QueueObservation(
            st.QUEUED,
            (
                st.CondUpdate(st.QUEUED, st.TRUE, why, msg),
                st.CondUpdate(st.RUNNING, st.FALSE, why, "no pods until Kueue admits the Job"),
            ),
            preempted,
        )
    queued = _condition(old_status, st.QUEUED)
    if queued is not None and queued.status == st.TRUE:
        return QueueObservation(
            None, (st.CondUpdate(st.QUEUED, st.FALSE, st.Reason.ADMITTED, f"admitted by Kueue in LocalQueue {queue}"),)
        )
    return QueueObservation(None)
