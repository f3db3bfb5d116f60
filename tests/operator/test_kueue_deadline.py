"""activeDeadlineSeconds counts from the first running pod: time waiting in a queue or for a node is free.

So is time suspended (by the user) or queued again (a Kueue preemption) after the start: the
clock stops while the job is held and runs on, with what it had used, once the job runs again.
"""

from __future__ import annotations

from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, Cluster, OperatorHandle, job_manifest
from tests.harness.kueue import KueueStandIn

NS = "team-b"


def test_the_deadline_starts_with_the_first_running_pod(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("patient", NS, runPolicy={"activeDeadlineSeconds": 2}))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "patient"), message="the Job")
    for index in range(2):
        cluster.make_pod(job, index)  # pending: no node, no image yet
    # Ticks that together last longer than the deadline (0.2 s apart), with no pod running.
    operator.wait_handled(NS, "patient", more=20, trigger="tick")
    status = checks.status_of(cluster, "patient", NS)
    assert status.get("phase") != "Failed", "waiting for pods must not use up activeDeadlineSeconds"
    assert "startTime" not in status
    checks.start_gang(cluster, "patient", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "patient", NS).get("startTime"), message="startTime set")
    failed = cluster.wait_for(
        lambda: (c := checks.condition(cluster, "patient", NS, "Failed")) and c["status"] == "True" and c,
        message="Failed by the deadline once running",
    )
    assert failed["reason"] == "DeadlineExceeded"


# Long enough that the few reconciles between the first running pod and the pause cannot use
# it up, short enough that the pause below outlasts it many times over.
DEADLINE = 5
#: Ticks run at least 0.2 s apart (the test settings' poll interval): this many span > DEADLINE.
TICKS_PAST_THE_DEADLINE = DEADLINE * 5 + 5


def _phase(cluster: Cluster, name: str) -> str | None:
    return checks.status_of(cluster, name, NS).get("phase")


def _annotations(cluster: Cluster, name: str) -> dict[str, str]:
    return (cluster.get(AJOBS, NS, name) or {}).get("metadata", {}).get("annotations") or {}


def _failed_by_deadline(cluster: Cluster, name: str) -> dict[str, str]:
    failed = cluster.wait_for(
        lambda: (c := checks.condition(cluster, name, NS, "Failed")) and c["status"] == "True" and c,
        message=f"{name} Failed by its deadline once running again",
    )
    assert failed["reason"] == "DeadlineExceeded", failed
    return failed


def _hold_past_the_deadline(cluster: Cluster, operator: OperatorHandle, name: str, phase: str) -> None:
    cluster.wait_for(lambda: _phase(cluster, name) == phase, message=f"{name} {phase}")
    cluster.wait_for(lambda: "kadapt.dev/deadline-paused-since" in _annotations(cluster, name),
                     message="the pause recorded on the AdaptationJob")
    operator.wait_handled(NS, name, more=TICKS_PAST_THE_DEADLINE, trigger="tick")
    assert _phase(cluster, name) == phase, f"time {phase.lower()} after the start must not use up the deadline"


def test_time_suspended_by_the_user_after_the_start_does_not_count(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("paused", NS, runPolicy={"activeDeadlineSeconds": DEADLINE}))
    checks.start_gang(cluster, "paused", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "paused", NS).get("startTime"), message="startTime set")
    cluster.patch(AJOBS, NS, "paused", {"spec": {"runPolicy": {"suspend": True}}})
    _hold_past_the_deadline(cluster, operator, "paused", "Suspended")

    cluster.patch(AJOBS, NS, "paused", {"spec": {"runPolicy": {"suspend": False}}})
    # The emulator runs no Job controller: the pods left running count as the resumed gang.
    failed = _failed_by_deadline(cluster, "paused")
    annotations = _annotations(cluster, "paused")
    assert "kadapt.dev/deadline-paused-since" not in annotations, "the clock runs again after the resume"
    assert float(annotations["kadapt.dev/deadline-paused-seconds"]) >= DEADLINE
    assert "suspended or queued" in failed["message"], failed["message"]


def test_time_preempted_by_kueue_after_the_start_does_not_count(cluster: Cluster, operator: OperatorHandle) -> None:
    with KueueStandIn(cluster) as kueue:
        manifest = job_manifest("preempted", NS, queueName="gpus", runPolicy={"activeDeadlineSeconds": DEADLINE})
        cluster.create(AJOBS, manifest)
        kueue.wait_queued(NS, "preempted")
        kueue.admit(NS, "preempted")
        checks.start_gang(cluster, "preempted", NS)
        cluster.wait_for(lambda: checks.status_of(cluster, "preempted", NS).get("startTime"), message="startTime")
        kueue.preempt(NS, "preempted")
        _hold_past_the_deadline(cluster, operator, "preempted", "Queued")

        kueue.admit(NS, "preempted")
        checks.start_gang(cluster, "preempted", NS)
        _failed_by_deadline(cluster, "preempted")
        assert float(_annotations(cluster, "preempted")["kadapt.dev/deadline-paused-seconds"]) >= DEADLINE
