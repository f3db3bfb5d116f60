"""activeDeadlineSeconds counts from the first running pod: time waiting in a queue or for a node is free."""

from __future__ import annotations

from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, Cluster, OperatorHandle, job_manifest

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
