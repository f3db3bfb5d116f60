"""Kueue: the operator creates queued Jobs suspended, never unsuspends them, and reads Kueue's hold.

The emulator runs no Kueue, so ``tests.harness.kueue.KueueStandIn`` plays it: it suspends a
queue-labelled Job that arrives unsuspended (its webhook), unsuspends it on ``admit``,
suspends it again on ``preempt`` (and deletes its pods, as the Job controller does), and
records every time someone else unsuspended a Job it had not admitted (``fights``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from kadapt_operator.api import AdaptationJobStatus, Condition
from kadapt_operator.runtime import queueing
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.decide import ChildAction, Trigger, decide_children
from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, Cluster, OperatorHandle, complete_job_status, job_manifest
from tests.harness.kueue import KueueStandIn

NS = "team-a"
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


# -- pure decisions ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exists", "suspended", "want", "action"),
    [
        (False, False, False, ChildAction.CREATE),  # created (suspended, by the caller) for Kueue to admit
        (True, True, False, ChildAction.KEEP),  # waiting for admission: never unsuspend it
        (True, False, False, ChildAction.KEEP),  # admitted: running
        (True, True, True, ChildAction.STOP),  # user or budget stop: delete it, Kueue would unsuspend it
        (True, False, True, ChildAction.STOP),
        (False, False, True, ChildAction.KEEP),  # stopped: nothing until resumed
    ],
)
def test_children_of_a_queued_job(exists: bool, suspended: bool, want: bool, action: ChildAction) -> None:
    got = decide_children(
        job_exists=exists,
        job_suspended=suspended,
        want_suspend=want,
        restart_after=None,
        old_incarnation_listed=False,
        trigger=Trigger.TICK,
        now=NOW,
        queued=True,
    )
    assert got == action


def _job(suspended: bool) -> st.JobView:
    return st.JobView(name="q", uid="u1", suspended=suspended, completions=2, succeeded=0, complete=False,
                      failed_reason=None)


def test_a_job_waiting_for_admission_is_queued_naming_its_queue() -> None:
    obs = queueing.observe_queue("gpus", _job(True), suspend_reason=None, old_status=AdaptationJobStatus())
    assert obs.phase == st.QUEUED and not obs.preempted
    queued = next(c for c in obs.conditions if c.type == st.QUEUED)
    assert queued.reason == st.Reason.WAITING_FOR_ADMISSION and "LocalQueue gpus" in queued.message


def test_a_suspension_after_running_is_a_preemption_counted_once() -> None:
    running = AdaptationJobStatus(phase=st.RUNNING)
    obs = queueing.observe_queue("gpus", _job(True), suspend_reason=None, old_status=running)
    assert obs.phase == st.QUEUED and obs.preempted
    held = AdaptationJobStatus(
        phase=st.QUEUED, conditions=[Condition(type=st.QUEUED, status=st.TRUE, reason=st.Reason.PREEMPTED)]
    )
    again = queueing.observe_queue("gpus", _job(True), suspend_reason=None, old_status=held)
    assert again.phase == st.QUEUED and not again.preempted
    assert next(c for c in again.conditions if c.type == st.QUEUED).reason == st.Reason.PREEMPTED


def test_admission_and_stops_and_unqueued_jobs() -> None:
    held = AdaptationJobStatus(
        phase=st.QUEUED, conditions=[Condition(type=st.QUEUED, status=st.TRUE, reason=st.Reason.WAITING_FOR_ADMISSION)]
    )
    admitted = queueing.observe_queue("gpus", _job(False), suspend_reason=None, old_status=held)
    assert admitted.phase is None
    assert [(c.type, c.status, c.reason) for c in admitted.conditions] == [(st.QUEUED, st.FALSE, st.Reason.ADMITTED)]
    stopped = queueing.observe_queue("gpus", None, suspend_reason=st.Reason.SUSPENDED_BY_USER, old_status=held)
    assert stopped.phase == st.SUSPENDED
    assert queueing.observe_queue(None, _job(True), suspend_reason=None, old_status=held).phase is None


# -- against the emulator ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[KueueStandIn]:
    with KueueStandIn(cluster) as stand_in:
        yield stand_in


def _phase(cluster: Cluster, name: str) -> str | None:
    phase = checks.status_of(cluster, name, NS).get("phase")
    return str(phase) if phase else None


def _queued_reason(cluster: Cluster, name: str) -> str | None:
    cond = checks.condition(cluster, name, NS, st.QUEUED)
    return str(cond["reason"]) if cond and cond["status"] == st.TRUE else None


def test_admitted_preempted_and_readmitted_to_success(
    cluster: Cluster, operator: OperatorHandle, kueue: KueueStandIn
) -> None:
    cluster.create(AJOBS, job_manifest("queued", NS, queueName="gpus"))
    kueue.wait_queued(NS, "queued")
    cluster.wait_for(lambda: _phase(cluster, "queued") == st.QUEUED, message="phase Queued")
    cond = checks.condition(cluster, "queued", NS, st.QUEUED)
    assert cond is not None and "LocalQueue gpus" in cond["message"]
    assert kueue.created_unsuspended == [], "the Job of a queued job must be created suspended"

    kueue.admit(NS, "queued")
    checks.start_gang(cluster, "queued", NS)
    cluster.wait_for(lambda: _phase(cluster, "queued") == st.RUNNING, message="running after admission")
    admitted = checks.condition(cluster, "queued", NS, st.QUEUED)
    assert admitted is not None and admitted["status"] == st.FALSE and admitted["reason"] == st.Reason.ADMITTED

    kueue.preempt(NS, "queued")
    cluster.wait_for(lambda: _queued_reason(cluster, "queued") == st.Reason.PREEMPTED, message="preempted")
    status = checks.status_of(cluster, "queued", NS)
    assert status["phase"] == st.QUEUED
    assert status.get("disruptions") == 1 and not status.get("restarts"), "a preemption is a disruption"
    job = cluster.get(JOBS, NS, "queued")
    assert job is not None and job["spec"]["suspend"] is True, "the operator must leave Kueue's suspension alone"

    kueue.admit(NS, "queued")
    checks.start_gang(cluster, "queued", NS)
    cluster.wait_for(lambda: _phase(cluster, "queued") == st.RUNNING, message="running after re-admission")
    cluster.set_status(JOBS, NS, "queued", complete_job_status(2))
    cluster.wait_for(lambda: _phase(cluster, "queued") == st.SUCCEEDED, message="succeeded")
    final = checks.status_of(cluster, "queued", NS)
    assert final.get("disruptions") == 1 and not final.get("restarts")
    assert kueue.fights == [], "only Kueue may unsuspend a queued Job"


def test_a_user_suspend_of_a_queued_job_deletes_its_job_and_a_resume_queues_it_again(
    cluster: Cluster, operator: OperatorHandle, kueue: KueueStandIn
) -> None:
    cluster.create(AJOBS, job_manifest("queued-pause", NS, queueName="gpus"))
    kueue.wait_queued(NS, "queued-pause")
    kueue.admit(NS, "queued-pause")
    checks.start_gang(cluster, "queued-pause", NS)
    cluster.wait_for(lambda: _phase(cluster, "queued-pause") == st.RUNNING, message="running")

    cluster.patch(AJOBS, NS, "queued-pause", {"spec": {"runPolicy": {"suspend": True}}})
    cluster.wait_for(lambda: cluster.get(JOBS, NS, "queued-pause") is None, message="Job deleted to stop it")
    cluster.wait_for(lambda: _phase(cluster, "queued-pause") == st.SUSPENDED, message="phase Suspended")

    cluster.patch(AJOBS, NS, "queued-pause", {"spec": {"runPolicy": {"suspend": False}}})
    kueue.wait_queued(NS, "queued-pause")
    cluster.wait_for(lambda: _phase(cluster, "queued-pause") == st.QUEUED, message="queued again")
    assert kueue.created_unsuspended == [] and kueue.fights == []
