"""Level-triggered and GitOps-safe: missing children come back; finished jobs are not trained twice."""

from __future__ import annotations

from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    JOBS,
    PODS,
    Cluster,
    OperatorHandle,
    complete_job_status,
    job_manifest,
    waiting_status,
)

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


def _cond(cluster: Cluster, name: str, kind: str) -> tuple[str, str] | None:
    c = checks.condition(cluster, name, NS, kind)
    return (c["status"], c["reason"]) if c else None


def test_kstatus_conditions_follow_the_job_to_ready(cluster: Cluster, operator: OperatorHandle) -> None:
    """`kubectl wait --for=condition=Ready` and Flux's kstatus health checks read these."""
    cluster.create(AJOBS, job_manifest("waitable", NS))
    cluster.wait_for(lambda: (_cond(cluster, "waitable", "Reconciling") or ("",))[0] == "True", message="Reconciling")
    assert (_cond(cluster, "waitable", "Ready") or ("",))[0] == "False"
    assert (_cond(cluster, "waitable", "Stalled") or ("",))[0] == "False"
    checks.start_gang(cluster, "waitable", NS)
    cluster.set_status(JOBS, NS, "waitable", complete_job_status(2))
    cluster.wait_for(lambda: _cond(cluster, "waitable", "Ready") == ("True", "Succeeded"), message="Ready=True")
    assert (_cond(cluster, "waitable", "Reconciling") or ("",))[0] == "False"
    assert (_cond(cluster, "waitable", "Stalled") or ("",))[0] == "False"


def test_a_missing_secret_is_named_in_a_condition_an_event_and_stalled(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("no-secret", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "no-secret"), message="the Job")
    for index in range(2):
        pod = cluster.make_pod(job, index)
        missing = waiting_status("CreateContainerConfigError", 'secret "hf-token" not found')
        cluster.set_status(PODS, NS, pod["metadata"]["name"], missing)
    running = cluster.wait_for(
        lambda: (c := checks.condition(cluster, "no-secret", NS, "Running")) and c["reason"] != "PodsStarting" and c,
        message="Running condition with the cause",
    )
    assert running["reason"] == "CreateContainerConfigError"
    assert 'secret "hf-token" not found' in running["message"]
    event = cluster.wait_for(
        lambda: next((e for e in checks.events_for(cluster, "no-secret", NS)
                      if e.get("reason") == "CreateContainerConfigError"), None),
        message="Warning Event",
    )
    assert event["type"] == "Warning"
    assert _cond(cluster, "no-secret", "Stalled") == ("True", "CreateContainerConfigError")
