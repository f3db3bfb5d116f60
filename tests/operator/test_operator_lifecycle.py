"""The real operator against the emulator: children, status from pods, suspend, restarts of the operator."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from kadapt_operator.labels import LABEL_JOB_NAME
from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    JOBS,
    PODS,
    SERVICES,
    Cluster,
    OperatorHandle,
    complete_job_status,
    job_manifest,
    running_status,
    terminated_status,
    unschedulable_status,
    waiting_status,
)
from tests.harness.progress import FakeProgress, serve_progress

NS = "team-a"


def status_of(cluster: Cluster, name: str, ns: str = NS) -> dict[str, Any]:
    return checks.status_of(cluster, name, ns)


def cond(cluster: Cluster, name: str, type_: str, ns: str = NS) -> dict[str, Any] | None:
    return checks.condition(cluster, name, ns, type_)


def events_for(cluster: Cluster, name: str, ns: str = NS) -> list[dict[str, Any]]:
    return checks.events_for(cluster, name, ns)


def _count_creates(cluster: Cluster, plural: str, ns: str, name: str) -> int:
    return checks.creations(cluster, {"jobs": JOBS, "configmaps": CONFIGMAPS, "services": SERVICES}[plural], ns, name)


def start_gang(cluster: Cluster, name: str, ns: str = NS) -> list[dict[str, Any]]:
    return checks.start_gang(cluster, name, ns)


def test_create_makes_exactly_one_of_each_child_owned_by_the_job(cluster: Cluster, operator: OperatorHandle) -> None:
    created = cluster.create(AJOBS, job_manifest("children", NS))
    uid = created["metadata"]["uid"]
    cluster.wait_for(lambda: status_of(cluster, "children").get("phase") == "Created", message="phase Created")
    for res, name in ((CONFIGMAPS, "children-config"), (SERVICES, "children"), (JOBS, "children")):
        obj = cluster.get(res, NS, name)
        assert obj is not None, f"{res} {name} missing"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "kadapt.dev/v1alpha1",
            "kind": "AdaptationJob",
            "name": "children",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["labels"][LABEL_JOB_NAME] == "children"
    mine = [
        o
        for res in (CONFIGMAPS, SERVICES, JOBS)
        for o in cluster.list(res, NS)
        if o["metadata"]["labels"].get(LABEL_JOB_NAME) == "children"
    ]
    assert sorted(o["kind"] for o in mine) == ["ConfigMap", "Job", "Service"]
    job = cluster.get(JOBS, NS, "children")
    assert job is not None and job["spec"]["suspend"] is False
    created_cond = cond(cluster, "children", "Created")
    assert created_cond is not None and created_cond["status"] == "True"
    assert created_cond["observedGeneration"] == 1
    assert status_of(cluster, "children")["observedGeneration"] == 1
    assert "startTime" not in status_of(cluster, "children"), "startTime is the first running pod's, not creation"
    # Exactly one create of each: no POST retried into a second object.
    for plural, name in (("jobs", "children"), ("configmaps", "children-config"), ("services", "children")):
        assert _count_creates(cluster, plural, NS, name) == 1
    reasons = {e["reason"] for e in cluster.wait_for(lambda: events_for(cluster, "children"))}
    assert "ChildrenCreated" in reasons
    # No finalizer: nothing must happen on deletion that ownerReferences do not already do.
    assert not (cluster.get(AJOBS, NS, "children") or {})["metadata"].get("finalizers")


def test_pod_states_drive_phase_conditions_and_events(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("podstates", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "podstates"))
    p0 = cluster.make_pod(job, 0)
    p1 = cluster.make_pod(job, 1)
    # Unschedulable pods surface in the Running condition, with the scheduler's message.
    cluster.set_status(PODS, NS, p1["metadata"]["name"], unschedulable_status("0/3 nodes: Insufficient nvidia.com/gpu"))
    c = cluster.wait_for(lambda: (x := cond(cluster, "podstates", "Running")) and x["reason"] == "Unschedulable" and x)
    assert "Insufficient nvidia.com/gpu" in c["message"] and c["status"] == "False"
    # Image pull errors too.
    cluster.set_status(PODS, NS, p1["metadata"]["name"], waiting_status("ImagePullBackOff", "Back-off pulling image"))
    c = cluster.wait_for(lambda: (x := cond(cluster, "podstates", "Running")) and x["reason"] == "ImagePullError" and x)
    assert "ImagePullBackOff" in c["message"] and p1["metadata"]["name"] in c["message"]
    # Both running: phase Running.
    cluster.set_status(PODS, NS, p0["metadata"]["name"], running_status())
    cluster.set_status(PODS, NS, p1["metadata"]["name"], running_status())
    cluster.wait_for(lambda: status_of(cluster, "podstates").get("phase") == "Running", message="Running")
    running = cond(cluster, "podstates", "Running")
    assert running is not None and running["status"] == "True" and running["message"] == "2/2 pods running"
    # The Job controller reports completion: Succeeded, with completion time and output.
    cluster.set_status(JOBS, NS, "podstates", complete_job_status(2))
    cluster.wait_for(lambda: status_of(cluster, "podstates").get("phase") == "Succeeded", message="Succeeded")
    st = status_of(cluster, "podstates")
    assert st["completionTime"] and st["output"]["uri"] == "pvc://out/podstates"
    succeeded = cond(cluster, "podstates", "Succeeded")
    assert succeeded is not None and succeeded["status"] == "True"
    cluster.wait_for(lambda: any(e["reason"] == "JobCompleted" for e in events_for(cluster, "podstates")))
    reasons = [e["reason"] for e in events_for(cluster, "podstates")]
    for expected in ("ChildrenCreated", "Unschedulable", "ImagePullError", "PodsRunning", "JobCompleted"):
        assert expected in reasons
    warnings = {e["reason"] for e in events_for(cluster, "podstates") if e["type"] == "Warning"}
    assert {"Unschedulable", "ImagePullError"} <= warnings


def test_suspend_round_trips_to_the_job(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("pausable", NS))
    pods = start_gang(cluster, "pausable")
    cluster.wait_for(lambda: status_of(cluster, "pausable").get("phase") == "Running")
    cluster.patch(AJOBS, NS, "pausable", {"spec": {"runPolicy": {"suspend": True}}})
    cluster.wait_for(
        lambda: (cluster.get(JOBS, NS, "pausable") or {}).get("spec", {}).get("suspend") is True,
        message="Job suspended",
    )
    cluster.wait_for(lambda: status_of(cluster, "pausable").get("phase") == "Suspended")
    s = cond(cluster, "pausable", "Suspended")
    assert s is not None and s["status"] == "True" and s["reason"] == "SuspendedByUser"
    assert s["observedGeneration"] == 2
    # The Job controller stops the pods; torchrun exits 1 on SIGTERM: a suspension, not a failure.
    for pod in pods:
        cluster.set_status(PODS, NS, pod["metadata"]["name"], terminated_status(1))
    cluster.wait_for(lambda: checks.creations(cluster, PODS, NS, pods[1]["metadata"]["name"]) == 1)
    cluster.patch(AJOBS, NS, "pausable", {"spec": {"runPolicy": {"suspend": False}}})
    cluster.wait_for(
        lambda: (cluster.get(JOBS, NS, "pausable") or {}).get("spec", {}).get("suspend") is False, message="Job resumed"
    )
    cluster.wait_for(lambda: (x := cond(cluster, "pausable", "Suspended")) and x["status"] == "False")
    # Several ticks later: still the same gang, nothing counted.
    cluster.wait_for(lambda: status_of(cluster, "pausable")["phase"] in ("Created", "Running"))
    operator.wait_handled(NS, "pausable", more=3, trigger="tick")
    st = status_of(cluster, "pausable")
    assert st["phase"] in ("Created", "Running") and not st.get("restarts") and not st.get("disruptions")
    assert _count_creates(cluster, "jobs", NS, "pausable") == 1


def test_created_suspended_job_renders_a_suspended_job(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("born-paused", NS, runPolicy={"suspend": True}))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "born-paused"))
    assert job["spec"]["suspend"] is True
    cluster.wait_for(lambda: status_of(cluster, "born-paused").get("phase") == "Suspended")


@pytest.fixture()
def trainer_progress() -> Iterator[tuple[int, type[FakeProgress]]]:
    """A stand-in for rank 0's /progress on a free local port (the trainer's contract, faked)."""
    with serve_progress({}) as served:
        yield served


def test_progress_is_polled_from_rank_0_and_patched_on_change(
    trainer_progress: tuple[int, type[FakeProgress]],
) -> None:
    port, handler = trainer_progress
    handler.report = {
        "state": "training",
        "step": 10,
        "total_steps": 40,
        "epoch": 0.5,
        "loss": 0.693,
        "samples_per_second": 12.5,
        "eta_seconds": 30.0,
        "trainable_params": 1000,
        "total_params": 100000,
        "strategy": "lora",
        "strategy_reason": "asked for lora",
        "last_checkpoint": "pvc://out/ckpt/step-10",
        "eval_metrics": {"accuracy": 0.75},
    }
    with Cluster(namespaces=(NS,)) as cluster, cluster.operator(settings_overrides={"progress_port": port}):
        cluster.create(AJOBS, job_manifest("polled", NS))
        start_gang(cluster, "polled")
        st = cluster.wait_for(
            lambda: (s := status_of(cluster, "polled")).get("progress", {}).get("step") == 10 and s,
            message="progress step 10",
        )
        assert st["progress"]["percent"] == 25.0 and st["progress"]["loss"] == 0.693
        assert st["parameters"] == {"trainable": 1000, "total": 100000, "percent": 1.0}
        assert st["strategy"] == {"resolved": "lora", "reason": "asked for lora"}
        assert st["lastCheckpoint"] == "pvc://out/ckpt/step-10"
        assert st["cost"]["gpuSeconds"] >= 0 and st["cost"]["pricePerGPUHour"] == 3.6
        handler.report = {**handler.report, "step": 20, "loss": 0.5}
        cluster.wait_for(lambda: status_of(cluster, "polled").get("progress", {}).get("step") == 20)
        # Patched only on change: no status writes while neither progress nor cost moves.
        assert status_of(cluster, "polled")["progress"]["loss"] == 0.5


def test_operator_restart_mid_job_creates_no_duplicates() -> None:
    with Cluster(namespaces=(NS,)) as cluster:
        with cluster.operator():
            cluster.create(AJOBS, job_manifest("survivor", NS))
            start_gang(cluster, "survivor")
            cluster.wait_for(lambda: status_of(cluster, "survivor").get("phase") == "Running")
        # While the operator is down, one more job arrives and the first one finishes a pod.
        cluster.create(AJOBS, job_manifest("late", NS))
        before = len(cluster.operator_requests())
        with cluster.operator():
            cluster.wait_for(lambda: cluster.get(JOBS, NS, "late"), message="late job created after restart")
            cluster.wait_for(lambda: status_of(cluster, "late").get("phase") == "Created")
            cluster.set_status(JOBS, NS, "survivor", complete_job_status(2))
            cluster.wait_for(lambda: status_of(cluster, "survivor").get("phase") == "Succeeded")
        for plural, name in (
            ("jobs", "survivor"),
            ("configmaps", "survivor-config"),
            ("services", "survivor"),
            ("jobs", "late"),
        ):
            assert _count_creates(cluster, plural, NS, name) == 1
        # The restarted operator adopted the running gang without writing it again.
        after = cluster.operator_requests()[before:]
        posts = Counter(r.path for r in after if r.method == "POST" and "/events" not in r.path)
        assert all("survivor" not in p for p in posts), posts
        assert not status_of(cluster, "survivor").get("restarts")


def test_a_pods_progress_port_annotation_wins_over_the_setting(
    cluster: Cluster, operator: OperatorHandle, trainer_progress: tuple[int, type[FakeProgress]]
) -> None:
    # Pods run side by side on one address (the local kubelet): each says where it serves /progress.
    port, handler = trainer_progress
    handler.report = {"state": "training", "step": 3, "total_steps": 12, "strategy": "head-only"}
    cluster.create(AJOBS, job_manifest("annotated", NS))
    checks.start_gang(cluster, "annotated", NS, progress_port=port)
    st = cluster.wait_for(lambda: (s := status_of(cluster, "annotated")).get("progress", {}).get("step") == 3 and s)
    assert st["progress"]["percent"] == 25.0 and st["strategy"]["resolved"] == "head-only"


def test_liveness_endpoint_reports_the_jobs_it_tracks() -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Cluster(namespaces=(NS,)) as cluster, cluster.operator(liveness=f"http://127.0.0.1:{port}/healthz"):
        cluster.create(AJOBS, job_manifest("alive", NS))
        cluster.wait_for(lambda: cluster.get(JOBS, NS, "alive"))

        def probe() -> dict[str, Any] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    return json.loads(resp.read()) if resp.status == 200 else None
            except OSError:
                return None

        assert cluster.wait_for(lambda: (p := probe()) and p.get("jobs") == 1 and p)


def test_a_child_name_owned_by_something_else_is_a_clear_conflict(cluster: Cluster, operator: OperatorHandle) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "taken-config", "namespace": NS, "labels": {"app": "other"}},
        "data": {"x": "1"},
    }
    cluster.create(CONFIGMAPS, foreign)
    cluster.create(AJOBS, job_manifest("taken", NS))
    c = cluster.wait_for(lambda: (x := cond(cluster, "taken", "Created")) and x["reason"] == "ChildConflict" and x)
    assert c["status"] == "False" and "taken-config" in c["message"] and "not created by kadapt" in c["message"]
    assert (cluster.get(CONFIGMAPS, NS, "taken-config") or {}).get("data") == {"x": "1"}  # never overwritten
    assert cluster.get(JOBS, NS, "taken") is None
    cluster.wait_for(lambda: any(e["reason"] == "ChildConflict" for e in events_for(cluster, "taken")))


def test_changing_an_immutable_field_is_reported_not_applied(cluster: Cluster, operator: OperatorHandle) -> None:
    # The API server's CEL rule (self == oldSelf) rejects this; the emulator has no admission.
    cluster.create(AJOBS, job_manifest("fixed", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "fixed"))
    cluster.patch(AJOBS, NS, "fixed", {"spec": {"model": {"uri": "pvc://models/other"}, "budget": {"maxCost": 5}}})
    event = cluster.wait_for(
        lambda: next((e for e in events_for(cluster, "fixed") if e["reason"] == "ImmutableFieldChanged"), None)
    )
    assert event["type"] == "Warning"
    assert "spec.model changed after the job started and is ignored" in event["message"]
    assert (cluster.get(JOBS, NS, "fixed") or {})["metadata"]["uid"] == job["metadata"]["uid"]
