"""The chart's Deployment, run for real: its command, arguments, environment and ConfigMap
start the kadapt operator against KMock's emulator, its probes and metrics answer on the
chart's ports, and every API request the operator makes is allowed by the chart's RBAC.

Only what a pod has and this machine lacks is substituted: the in-cluster credentials
(``--kubeconfig`` to the emulator, and ``--fast`` timeouts for it), the ConfigMap mount (the
rendered file in a temporary folder) and the downward-API values.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import kmock
import pytest
import yaml

from kadapt_operator.permissions import is_tolerated, request_attributes
from kadapt_trainer.ports import free_port
from tests.harness.emulator import AJOBS, CRDS, JOBS, Cluster, RequestRecord, job_manifest, wait_for
from tests.helm.chart import Rendered, render
from tests.helm.test_helm_rbac import operator_grants

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAMESPACES = ("team-a", "team-b")
TRAINER = {"repository": "registry.example/ml/kadapt-trainer", "tag": "e2e"}
PEERINGS = "kopf.dev/v1/kopfpeerings"
#: What kopf logs when a replica's handlers resume (it starts paused when peering is mandatory),
#: and when they pause for a higher-priority peer.
RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"
T = TypeVar("T")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as rsp:
            return int(rsp.status), rsp.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def _values(health: int, metrics: int, **extra: Any) -> dict[str, Any]:
    return {"watch": {"namespaces": list(NAMESPACES)}, "health": {"port": health}, "metrics": {"port": metrics},
            "config": {"trainerImage": TRAINER, "pollIntervalSeconds": 1}, **extra}


WATCH_MODES = {"namespaced": {"namespaces": list(NAMESPACES)}, "all-namespaces": {"allNamespaces": True}}


def _requests(cluster: Cluster) -> Iterable[RequestRecord]:
    """The operator's requests (typed here: the harness's class-level `list` method confuses mypy)."""
    return cast("Iterable[RequestRecord]", cluster.operator_requests())


@dataclass(frozen=True)
class Replica:
    """One rendered operator container, running as a local process; its log goes to a file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the operator has logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """:func:`wait_for` the state, failing at once (with the log) if the operator exits first."""
        return wait_for(predicate, timeout, message=what, process=self.proc, output=self.output)


@contextlib.contextmanager
def run_deployment(
    r: Rendered, cluster: Cluster, tmp: Path, pod_name: str, priority: int | None = None
) -> Iterator[Replica]:
    """Start the rendered operator container as a local process.

    ``priority``: what the container's ``shuf`` draws as its peering priority (a stub on PATH),
    so that a test knows which replica will work; None leaves the draw random.
    """
    dep = r.one("Deployment")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_dir = tmp / pod_name / mounts["config"].lstrip("/")
    config_dir.mkdir(parents=True)
    for key, text in r.one("ConfigMap")["data"].items():
        (config_dir / key).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KADAPT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if priority is not None:
        stub = tmp / pod_name / "bin"
        stub.mkdir(parents=True)
        (stub / "shuf").write_text(f"#!/bin/sh\necho {priority}\n")
        (stub / "shuf").chmod(0o755)
        env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
    downward = {"metadata.name": pod_name, "metadata.namespace": "kadapt-system"}
    for item in container["env"]:
        value = item.get("value") or downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        if value.startswith(mounts["config"] + "/"):
            value = str(config_dir) + value[len(mounts["config"]):]
        elif value == mounts["tmp"]:
            value = str(tmp / pod_name)
        env[item["name"]] = value
    argv = [*container["command"], *container["args"], "--kubeconfig", str(cluster.kubeconfig), "--fast"]
    log = tmp / pod_name / "operator.log"
    with log.open("wb") as sink:  # a file, not a pipe: a pipe nobody reads would block a chatty operator
        proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Replica(proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _assert_requests_allowed_by_chart_rbac(cluster: Cluster, r: Rendered) -> int:
    grants = operator_grants(r)
    checked = 0
    denied = []
    for rec in _requests(cluster):
        attrs = request_attributes(rec.method, rec.path, rec.params)
        if attrs is None:
            continue  # discovery: system:discovery allows it for every authenticated user
        checked += 1
        triple = (attrs.api_group, attrs.resource, attrs.verb)
        allowed = triple in grants["cluster"] or (attrs.namespace is not None
                                                 and triple in grants.get(attrs.namespace, set()))
        if not allowed and not is_tolerated(attrs):
            denied.append(f"{rec.method} {rec.path} -> {triple} in {attrs.namespace}")
    assert not denied, "the chart's RBAC would deny:\n" + "\n".join(sorted(set(denied)))
    return checked


@functools.cache
def _entrypoint_help() -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("kadapt")), "operator", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_chart_entrypoint_exists() -> None:
    proc = _entrypoint_help()
    assert proc.returncode == 0 and "--peering" in proc.stdout, (
        f"`kadapt operator` is the chart's entrypoint:\n{proc.stderr[-1000:]}")


@pytest.mark.parametrize("watch", WATCH_MODES.values(), ids=WATCH_MODES.keys())
def test_chart_deployment_runs_the_operator_within_its_rbac(tmp_path: Path, watch: dict[str, Any]) -> None:
    health, metrics = free_port(), free_port()
    r = render(_values(health, metrics, watch=watch))
    with Cluster(namespaces=NAMESPACES) as cluster, run_deployment(r, cluster, tmp_path, "kadapt-0") as replica:
        replica.wait(lambda: _get(f"http://127.0.0.1:{health}/healthz")[0] == 200, 90, "the liveness probe")
        cluster.create(AJOBS, job_manifest("e2e-chart", "team-b"))
        job = replica.wait(lambda: cluster.get(JOBS, "team-b", "e2e-chart"), 60, "the training Job")
        images = {c["image"] for c in job["spec"]["template"]["spec"]["containers"]}
        assert images == {f"{TRAINER['repository']}:{TRAINER['tag']}"}, "the chart's ConfigMap was not used"
        status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and "kadapt_" in text
        assert _assert_requests_allowed_by_chart_rbac(cluster, r) > 5


def test_two_replicas_peer_and_create_each_child_once(tmp_path: Path) -> None:
    h1, m1, h2, m2 = (free_port() for _ in range(4))
    renders = [render(_values(h, m, replicaCount=2)) for h, m in ((h1, m1), (h2, m2))]
    peering_crd = next(d for d in yaml.safe_load_all(
        (Path(__file__).resolve().parents[2] / "charts/kadapt/crds/kopf-peering.yaml").read_text())
        if d["spec"]["names"]["plural"] == "kopfpeerings")
    with Cluster(namespaces=NAMESPACES) as cluster:
        def install_peering() -> None:
            cluster.emulator.resources[PEERINGS] = kmock.ResourceInfo(
                kind="KopfPeering", singular="kopfpeering", namespaced=True,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"})
            cluster.emulator.store(CRDS, peering_crd)
            for obj in renders[0].of_kind("KopfPeering"):  # what `helm install` creates
                cluster.emulator.store(PEERINGS, obj)

        cluster.in_loop(install_peering)
        # The chart draws each replica's priority at random (shuf); here the draws are fixed, so
        # that each step has a positive signal: "a" starts alone and works; "b", drawn higher,
        # joins, and kopf logs that "a" pauses in its favour. Only then is the job created.
        command = " ".join(renders[0].one("Deployment")["spec"]["template"]["spec"]["containers"][0]["command"])
        assert "--priority" in command and "shuf" in command, "equal priorities freeze kopf"
        pausing = len(list(renders[0].of_kind("KopfPeering")))  # kopf logs once per peering object
        assert pausing >= 1
        with run_deployment(renders[0], cluster, tmp_path, "kadapt-a", priority=100) as passive:
            passive.wait(lambda: _get(f"http://127.0.0.1:{h1}/healthz")[0] == 200, 90, "replica a")
            passive.wait(lambda: passive.output().count(RESUMED) >= pausing, 60, "replica a working alone")
            with run_deployment(renders[1], cluster, tmp_path, "kadapt-b", priority=200) as active:
                active.wait(lambda: _get(f"http://127.0.0.1:{h2}/healthz")[0] == 200, 90, "replica b")
                active.wait(lambda: active.output().count(RESUMED) >= pausing, 60, "replica b working")
                passive.wait(lambda: passive.output().count(PAUSED) >= pausing, 60, "replica a paused for b")
                peers = (cluster.get(PEERINGS, "team-a", "kadapt") or {}).get("status") or {}
                assert {p: peers[p]["priority"] for p in ("kadapt-a", "kadapt-b")} == {"kadapt-a": 100, "kadapt-b": 200}

                cluster.create(AJOBS, job_manifest("e2e-ha", "team-a"))
                active.wait(lambda: cluster.get(JOBS, "team-a", "e2e-ha"), 60, "the training Job")
                # The active replica has handled the job to the end (its status written) ...
                active.wait(lambda: observed(cluster, "team-a", "e2e-ha"), 60, "the job's status written")
                creates = [rec for rec in _requests(cluster)
                           if (a := request_attributes(rec.method, rec.path)) is not None
                           and (a.verb, a.api_group, a.resource, a.namespace) == ("create", "batch", "jobs", "team-a")]
                assert len(creates) == 1, f"{len(creates)} Job creations: both replicas worked"
                # ... while the passive one stayed paused (kopf logs every resume).
                assert passive.output().count(RESUMED) == pausing, "replica a resumed: both may have worked"
                assert passive.proc.poll() is None and active.proc.poll() is None
                _assert_requests_allowed_by_chart_rbac(cluster, renders[0])


def observed(cluster: Cluster, namespace: str, name: str) -> bool:
    """Whether the operator has written the job's status for its current spec (observedGeneration)."""
    obj = cluster.get(AJOBS, namespace, name) or {}
    generation = obj.get("metadata", {}).get("generation")
    return generation is not None and (obj.get("status") or {}).get("observedGeneration") == generation
