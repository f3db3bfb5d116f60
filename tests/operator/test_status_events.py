"""Events that tell the truth, once: one per real transition, and one for every status repair.

kopf posts Events from a queue, in order: once an Event of a later transition is stored,
every Event queued before it has been posted too. The tests wait for such a later Event
before counting, instead of waiting for time to pass.
"""

from __future__ import annotations

from typing import Any

from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    JOBS,
    PODS,
    Cluster,
    OperatorHandle,
    job_manifest,
    running_status,
    waiting_status,
)

NS = "team-a"


def _reasons(cluster: Cluster, name: str) -> list[str]:
    return [str(e.get("reason")) for e in checks.events_for(cluster, name, NS)]


def test_one_transition_posts_one_event_not_one_per_kstatus_condition(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("pull", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "pull"), message="the Job")
    pods = [cluster.make_pod(job, i) for i in range(2)]
    cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], waiting_status("ImagePullBackOff", "no such image"))
    cluster.wait_for(
        lambda: (c := checks.condition(cluster, "pull", NS, "Stalled")) and c["status"] == "True",
        message="Stalled=True on the image pull error",
    )
    running = checks.condition(cluster, "pull", NS, "Running")
    assert running is not None and running["reason"] == "ImagePullError"
    # The next transition: the image is fixed and both pods run. Its Event comes after the
    # pull error's Events in kopf's queue, so once it is stored, all of those are too.
    for pod in pods:
        cluster.set_status(PODS, NS, pod["metadata"]["name"], running_status())
    cluster.wait_for(lambda: "PodsRunning" in _reasons(cluster, "pull"), message="the PodsRunning Event")
    reasons = _reasons(cluster, "pull")
    assert reasons.count("ImagePullError") == 1, f"one Event, not one per kstatus condition: {reasons}"
    assert reasons.count("PodsRunning") == 1, reasons
    assert not [r for r in reasons if r == "Running"], f"no Event for Reconciling's reason change: {reasons}"


def test_a_repaired_status_entry_is_named_in_a_warning_event(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("mended", NS))
    checks.start_gang(cluster, "mended", NS)
    cluster.wait_for(
        lambda: checks.status_of(cluster, "mended", NS).get("cost", {}).get("accountedUntil"),
        message="the cost ledger counting the pods",
    )
    # A mark no tick writes (a pod of an earlier incarnation), so no racing write replaces it unread.
    cluster.set_status(AJOBS, NS, "mended", {"cost": {"accountedUntil": {"old-pod-uid": "yesterday-ish"}}})

    def repaired() -> list[dict[str, Any]]:
        return [e for e in checks.events_for(cluster, "mended", NS) if e.get("reason") == "StatusRepaired"]

    found = cluster.wait_for(repaired, message="a StatusRepaired Event")
    assert found[0]["type"] == "Warning"
    assert "accountedUntil.old-pod-uid" in found[0]["message"] and "yesterday-ish" in found[0]["message"]
    cluster.wait_for(
        lambda: "old-pod-uid" not in checks.status_of(cluster, "mended", NS)["cost"]["accountedUntil"],
        message="the malformed mark dropped from status",
    )
    operator.wait_handled(NS, "mended", more=3, trigger="tick")
    assert checks.status_of(cluster, "mended", NS)["phase"] == "Running", "the job's ticks go on"


def test_a_status_field_that_does_not_parse_is_dropped_with_a_warning_event(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("hand-edited", NS))
    checks.start_gang(cluster, "hand-edited", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "hand-edited", NS).get("phase") == "Running", message="Running")
    cluster.set_status(AJOBS, NS, "hand-edited", {"restarts": "many", "startTime": "the other day"})

    def repaired() -> list[dict[str, Any]]:
        return [e for e in checks.events_for(cluster, "hand-edited", NS) if e.get("reason") == "StatusRepaired"]

    found = cluster.wait_for(repaired, message="a StatusRepaired Event")
    assert found[0]["type"] == "Warning"
    assert "status.restarts: 'many'" in found[0]["message"] and "status.startTime" in found[0]["message"]
    status = cluster.wait_for(
        lambda: (s := checks.status_of(cluster, "hand-edited", NS)) and "restarts" not in s and s,
        message="the field that does not parse deleted from status",
    )
    assert status.get("startTime") != "the other day", "a startTime that is no time is set again, or dropped"
    operator.wait_handled(NS, "hand-edited", more=3, trigger="tick")
    assert len(repaired()) == 1, "dropped once, said once"
