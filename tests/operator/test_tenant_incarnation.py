"""Cost belongs to one incarnation: a re-created job of the same name is not billed for its namesake's pods."""

from __future__ import annotations

from tests.harness import checks
from tests.harness.emulator import AJOBS, CONFIGMAPS, JOBS, SERVICES, Cluster, OperatorHandle, job_manifest

NS = "team-b"


def test_a_recreated_job_is_not_billed_for_the_old_pods(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("reborn", NS))
    checks.start_gang(cluster, "reborn", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "reborn", NS).get("cost", {}).get("gpuSeconds"),
                     message="the first incarnation accrues")
    old_job = cluster.get(JOBS, NS, "reborn")
    assert old_job is not None
    cluster.delete(AJOBS, NS, "reborn")
    # The garbage collector has taken the Job, ConfigMap and Service; the pods still terminate.
    cluster.delete(JOBS, NS, "reborn")
    cluster.delete(CONFIGMAPS, NS, "reborn-config")
    cluster.delete(SERVICES, NS, "reborn")
    cluster.create(AJOBS, job_manifest("reborn", NS))
    new_job = cluster.wait_for(
        lambda: (j := cluster.get(JOBS, NS, "reborn")) and j["metadata"]["uid"] != old_job["metadata"]["uid"] and j,
        message="the new incarnation's Job",
    )
    assert new_job
    operator.wait_handled(NS, "reborn", more=10, trigger="tick")  # ticks that would bill the old pods
    cost = checks.status_of(cluster, "reborn", NS).get("cost", {})
    assert cost.get("gpuSeconds", 0) == 0, f"billed for the old incarnation's pods: {cost}"
    assert not cost.get("accountedUntil")
