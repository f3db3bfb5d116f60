"""Failures against the real operator: counted restarts with backoff, disruptions, deadlines, invalid specs."""

from __future__ import annotations

from typing import Any

from kadapt_operator.runtime.status import parse_time
from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    JOBS,
    PODS,
    SERVICES,
    Cluster,
    OperatorHandle,
    job_manifest,
    terminated_status,
)

NS = "team-b"


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return checks.status_of(cluster, name, NS)


def job_uid(cluster: Cluster, name: str) -> str | None:
    job = cluster.get(JOBS, NS, name)
    return job["metadata"]["uid"] if job else None


def fail_pod(cluster: Cluster, name: str, exit_code: int, *, disrupted: bool = False) -> str:
    """Start the gang, then terminate pod 1 with ``exit_code``; returns the failed Job's uid."""
    pods = checks.start_gang(cluster, name, NS)
    uid = job_uid(cluster, name)
    assert uid is not None
    cluster.set_status(PODS, NS, pods[1]["metadata"]["name"], terminated_status(exit_code, disrupted=disrupted))
    return uid


def new_incarnation(cluster: Cluster, name: str, old_uid: str) -> str:
    """Wait for the operator to recreate the Job (a new uid) and return it."""

    def recreated() -> str | None:
        uid = job_uid(cluster, name)
        return uid if uid and uid != old_uid else None

    return cluster.wait_for(recreated, message="Job recreated")


def test_worker_failure_restarts_the_gang_counted_until_backoff_limit(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("flaky", NS, runPolicy={"backoffLimit": 2}))
    uid = fail_pod(cluster, "flaky", 1)
    cluster.wait_for(lambda: status_of(cluster, "flaky").get("restarts") == 1, message="restarts == 1")
    # The Restarting=True transition may already be over (short backoff): its Event stays.
    event = cluster.wait_for(
        lambda: next(
            (e for e in checks.events_for(cluster, "flaky", NS) if e["message"].startswith("Restarting=True")), None
        )
    )
    assert event["type"] == "Warning" and event["reason"] == "WorkerFailed"
    assert "exited 1" in event["message"] and "restart 1/2" in event["message"]
    uid = new_incarnation(cluster, "flaky", uid)
    cluster.wait_for(lambda: status_of(cluster, "flaky").get("phase") in ("Created", "Running"))
    uid = fail_pod(cluster, "flaky", 137)
    cluster.wait_for(lambda: status_of(cluster, "flaky").get("restarts") == 2, message="restarts == 2")
    uid = new_incarnation(cluster, "flaky", uid)
    fail_pod(cluster, "flaky", 1)
    cluster.wait_for(lambda: status_of(cluster, "flaky").get("phase") == "Failed", message="Failed")
    st = status_of(cluster, "flaky")
    assert st["restarts"] == 2 and not st.get("disruptions")
    failed = checks.condition(cluster, "flaky", NS, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded" and "backoffLimit (2)" in failed["message"]
    assert checks.creations(cluster, JOBS, NS, "flaky") == 3
    assert job_uid(cluster, "flaky") == uid  # the last failed gang is kept, with its pods' logs
    cluster.wait_for(
        lambda: any(e["reason"] == "BackoffLimitExceeded" for e in checks.events_for(cluster, "flaky", NS))
    )
    reasons = [e["reason"] for e in checks.events_for(cluster, "flaky", NS)]
    assert reasons.count("WorkerFailed") >= 2


def test_restart_waits_for_the_backoff() -> None:
    with (
        Cluster(namespaces=(NS,)) as cluster,
        cluster.operator(settings_overrides={"restart_backoff_seconds": 2.0, "restart_backoff_max_seconds": 8.0}),
    ):
        cluster.create(AJOBS, job_manifest("slowback", NS))
        uid = fail_pod(cluster, "slowback", 1)
        obj = cluster.wait_for(
            lambda: (
                (o := cluster.get(AJOBS, NS, "slowback"))
                and o["metadata"].get("annotations", {}).get("kadapt.dev/restart-after")
                and o
            )
        )
        after = parse_time(obj["metadata"]["annotations"]["kadapt.dev/restart-after"])
        # the failed gang is stopped at once (the same reconcile deletes the Job), then waits for the backoff
        cluster.wait_for(lambda: cluster.get(JOBS, NS, "slowback") is None, message="failed gang stopped")
        new_incarnation(cluster, "slowback", uid)
        created = cluster.get(JOBS, NS, "slowback")
        assert created is not None and after is not None
        # creationTimestamp has whole seconds: compare at that precision
        created_at = parse_time(created["metadata"]["creationTimestamp"])
        assert created_at is not None and created_at >= after.replace(microsecond=0)


def test_disruption_does_not_count_against_backoff_limit(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("preempted", NS, runPolicy={"backoffLimit": 0}))
    uid = fail_pod(cluster, "preempted", 143)  # the trainer checkpointed and stopped on SIGTERM
    uid = new_incarnation(cluster, "preempted", uid)
    cluster.wait_for(lambda: status_of(cluster, "preempted").get("disruptions") == 1)
    uid2 = fail_pod(cluster, "preempted", 1, disrupted=True)  # DisruptionTarget wins over the exit code
    assert uid2 == uid
    new_incarnation(cluster, "preempted", uid)
    cluster.wait_for(lambda: status_of(cluster, "preempted").get("disruptions") == 2)
    st = status_of(cluster, "preempted")
    assert not st.get("restarts") and st["phase"] != "Failed"
    cluster.wait_for(lambda: any(e["reason"] == "Disrupted" for e in checks.events_for(cluster, "preempted", NS)))


def test_active_deadline_fails_the_job(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("overtime", NS, runPolicy={"activeDeadlineSeconds": 1}))
    checks.start_gang(cluster, "overtime", NS)
    cluster.wait_for(lambda: status_of(cluster, "overtime").get("phase") == "Failed", timeout=10)
    failed = checks.condition(cluster, "overtime", NS, "Failed")
    assert (
        failed is not None and failed["reason"] == "DeadlineExceeded" and "activeDeadlineSeconds" in failed["message"]
    )
    cluster.wait_for(lambda: cluster.get(JOBS, NS, "overtime") is None, message="pods stopped: Job deleted")


def test_invalid_job_stored_past_admission_fails_with_the_field_and_others_still_run(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    bad = job_manifest("broken", NS, training={"globalBatchSize": 10, "microBatchSize": 4}, runPolicy={})
    bad["spec"]["resources"] = {"workers": 0}
    cluster.create(AJOBS, bad)  # the emulator runs no admission: as if the CRD's rules were bypassed
    cluster.create(AJOBS, job_manifest("healthy", NS))
    cluster.wait_for(lambda: status_of(cluster, "broken").get("phase") == "Failed", message="broken Failed")
    failed = checks.condition(cluster, "broken", NS, "Failed")
    assert failed is not None and failed["reason"] == "InvalidSpec"
    assert "spec.resources.workers" in failed["message"]
    for res, name in ((JOBS, "broken"), (CONFIGMAPS, "broken-config"), (SERVICES, "broken")):
        assert cluster.get(res, NS, name) is None
    cluster.wait_for(
        lambda: any(
            e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in checks.events_for(cluster, "broken", NS)
        )
    )
    cluster.wait_for(lambda: cluster.get(JOBS, NS, "healthy"), message="the operator keeps serving")
    # Later reconciles (ticks) leave the Failed job as it is: no children, still Failed.
    operator.wait_handled(NS, "broken", trigger="tick")
    assert status_of(cluster, "broken")["phase"] == "Failed"
    assert cluster.get(JOBS, NS, "broken") is None


def test_an_invalid_job_with_a_ttl_is_cleaned_up_too(cluster: Cluster, operator: OperatorHandle) -> None:
    bad = job_manifest("broken-ttl", NS, runPolicy={"ttlSecondsAfterFinished": 0})
    bad["spec"]["strategy"] = {"type": "no-such-strategy"}
    cluster.create(AJOBS, bad)
    cluster.wait_for(
        lambda: (
            "kadapt.dev/children-removed"
            in (cluster.get(AJOBS, NS, "broken-ttl") or {}).get("metadata", {}).get("annotations", {})
        ),
        message="invalid job expired",
    )
    kept = cluster.get(AJOBS, NS, "broken-ttl")  # the TTL never deletes the AdaptationJob itself
    assert kept is not None and kept["status"]["phase"] == "Failed"
    assert cluster.get(JOBS, NS, "broken-ttl") is None


def test_bad_input_fails_at_once_with_its_cause_and_no_restart(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("badinput", NS, runPolicy={"backoffLimit": 2}))
    pods = checks.start_gang(cluster, "badinput", NS)
    uid = job_uid(cluster, "badinput")
    # Rank 0 refuses its data (exit 2, the cause in its termination message); its peer then loses
    # the rendezvous and exits 1. Either order of processing must end in BadInput, not a restart.
    message = "kadapt-trainer: error: data/train.jsonl line 3: field 'label' is missing; add it or drop the row"
    cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], terminated_status(2, message=message))
    cluster.set_status(PODS, NS, pods[1]["metadata"]["name"], terminated_status(1))
    ended = cluster.wait_for(
        lambda: (s := status_of(cluster, "badinput")).get("phase") == "Failed" or s.get("restarts") or None,
        message="Failed, or a restart",
    )
    assert ended is True, f"the gang was restarted: {status_of(cluster, 'badinput')}"
    failed = checks.condition(cluster, "badinput", NS, "Failed")
    assert failed is not None and failed["reason"] == "BadInput"
    assert "data/train.jsonl line 3: field 'label' is missing" in failed["message"]
    assert not status_of(cluster, "badinput").get("restarts")
    event = cluster.wait_for(
        lambda: next((e for e in checks.events_for(cluster, "badinput", NS) if e["reason"] == "BadInput"), None),
        message="BadInput Event",
    )
    assert event["type"] == "Warning" and "field 'label' is missing" in event["message"]
    assert checks.creations(cluster, JOBS, NS, "badinput") == 1 and job_uid(cluster, "badinput") == uid
