"""A Job whose pods the API server refuses names the cause, not "0/2 pods running" forever.

The Job controller reports a refused pod (ResourceQuota, LimitRange, Pod Security) only as a
``FailedCreate`` Warning Event on the batch Job. The emulator runs no Job controller, so the
test posts that Event itself, exactly as the controller would.
"""

from __future__ import annotations

from typing import Any

from tests.harness import checks
from tests.harness.emulator import AJOBS, EVENTS, JOBS, Cluster, OperatorHandle, job_manifest

NS = "team-b"
QUOTA = (
    'Error creating: pods "quota-0-x7k2p" is forbidden: exceeded quota: gpu-quota, requested: '
    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
)


def failed_create_event(job: dict[str, Any], message: str) -> dict[str, Any]:
    """The Event the Job controller posts when the API server refuses one of the Job's pods."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.17a2b3c4d5e6f708", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": "FailedCreate",
        "message": message,
        "type": "Warning",
        "source": {"component": "job-controller"},
        "count": 3,
        "firstTimestamp": "2026-12-01T03:00:00Z",
        "lastTimestamp": "2026-12-01T03:00:05Z",
    }


def event_reads(cluster: Cluster, job_name: str) -> int:
    """The operator's list requests for the Events of one Job."""
    return sum(1 for r in cluster.operator_requests()
               if r.method == "GET" and r.path.endswith("/events")
               and f"involvedObject.name={job_name}" in r.params.get("fieldSelector", ""))


def test_pods_refused_by_a_quota_name_the_cause_in_a_condition_and_an_event(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("healthy", NS))  # its pods come at once: no Event is read for it
    checks.start_gang(cluster, "healthy", NS)
    cluster.create(AJOBS, job_manifest("quota", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "quota"), message="the Job")
    cluster.create(EVENTS, failed_create_event(job, QUOTA))

    running = cluster.wait_for(
        lambda: (c := checks.condition(cluster, "quota", NS, "Running")) and c["reason"] == "FailedCreate" and c,
        message="Running=False naming FailedCreate",
    )
    assert running["status"] == "False"
    assert "exceeded quota: gpu-quota" in running["message"] and "ResourceQuota" in running["message"]
    stalled = checks.condition(cluster, "quota", NS, "Stalled")
    assert stalled is not None and stalled["status"] == "True", "kstatus: it cannot progress without a fix"

    def on_the_adaptation_job() -> dict[str, Any] | None:
        return next((e for e in checks.events_for(cluster, "quota", NS)
                     if e.get("reason") == "FailedCreate" and e["involvedObject"]["kind"] == "AdaptationJob"), None)

    event = cluster.wait_for(on_the_adaptation_job, message="a FailedCreate Event on the AdaptationJob")
    assert event["type"] == "Warning" and "exceeded quota" in event["message"]

    # The quota is raised: the Job controller creates the pods and they run.
    checks.start_gang(cluster, "quota", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "quota", NS).get("phase") == "Running", message="Running")
    stalled = checks.condition(cluster, "quota", NS, "Stalled")
    assert stalled is not None and stalled["status"] == "False"
    assert event_reads(cluster, "quota") >= 1
    assert event_reads(cluster, "healthy") == 0, "a gang that got its pods costs no Event reads"


def test_only_this_incarnations_refusals_count(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("namesake", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "namesake"), message="the Job")
    old = {**job, "metadata": {**job["metadata"], "uid": "uid-of-a-deleted-job"}}
    cluster.create(EVENTS, failed_create_event(old, QUOTA))
    operator.wait_handled(NS, "namesake", more=5, trigger="tick")
    running = checks.condition(cluster, "namesake", NS, "Running")
    assert running is not None and running["reason"] == "PodsStarting", running
    refusal = failed_create_event(job, "Error creating: pods is forbidden: violates PodSecurity restricted")
    cluster.create(EVENTS, {**refusal, "metadata": {**refusal["metadata"], "name": "namesake.mine"}})
    cluster.wait_for(
        lambda: (c := checks.condition(cluster, "namesake", NS, "Running")) and "PodSecurity" in c["message"],
        message="this Job's own refusal named",
    )
