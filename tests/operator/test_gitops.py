"""Level-triggered and GitOps-safe: missing children come back; finished jobs are not trained twice."""

from __future__ import annotations

from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, Cluster, OperatorHandle, job_manifest

NS = "team-b"


def test_a_job_deleted_underneath_a_running_job_is_created_again(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("orphaned", NS))
    first = cluster.wait_for(lambda: cluster.get(JOBS, NS, "orphaned"), message="the Job")
    checks.start_gang(cluster, "orphaned", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "orphaned", NS).get("phase") == "Running", message="Running")
    cluster.delete(JOBS, NS, "orphaned")  # by hand, or by a careless cleanup script
    again = cluster.wait_for(
        lambda: (j := cluster.get(JOBS, NS, "orphaned")) and j["metadata"]["uid"] != first["metadata"]["uid"] and j,
        message="the Job created again without a spec change",
    )
    assert again["spec"]["suspend"] is False
    assert checks.creations(cluster, JOBS, NS, "orphaned") == 2
