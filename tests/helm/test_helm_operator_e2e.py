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
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import kmock
import pytest
import yaml

from kadapt_operator.permissions import is_tolerated, request_attributes
from tests.harness.emulator import AJOBS, CRDS, JOBS, Cluster, RequestRecord, job_manifest
from tests.helm.chart import Rendered, render
from tests.helm.test_helm_rbac import operator_grants

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAMESPACES = ("team-a", "team-b")
TRAINER = {"repository": "registry.example/ml/kadapt-trainer", "tag": "e2e"}
PEERINGS = "kopf.dev/v1/kopfpeerings"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as rsp:
            return int(rsp.status), rsp.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read()[-4000:] if proc.stdout else ""
            raise AssertionError(f"the operator exited ({proc.returncode}) before {what}:\n{output}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _values(health: int, metrics: int, **extra: Any) -> dict[str, Any]:
    return {"watch": {"namespaces": list(NAMESPACES)}, "health": {"port": health}, "metrics": {"port": metrics},
            "config": {"trainerImage": TRAINER, "pollIntervalSeconds": 1}, **extra}


WATCH_MODES = {"namespaced": {"namespaces": list(NAMESPACES)}, "all-namespaces": {"allNamespaces": True}}


def _requests(cluster: Cluster) -> Iterable[RequestRecord]:
    """The operator's requests (typed here: the harness's class-level `list` method confuses mypy)."""
    return cast("Iterable[RequestRecord]", cluster.operator_requests())


@contextlib.contextmanager
def run_deployment(r: Rendered, cluster: Cluster, tmp: Path, pod_name: str) -> Iterator[subprocess.Popen[str]]:
    """Start the rendered operator container as a local process."""
    dep = r.one("Deployment")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_dir = tmp / pod_name / mounts["config"].lstrip("/")
    config_dir.mkdir(parents=True)
    for key, text in r.one("ConfigMap")["data"].items():
        (config_dir / key).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KADAPT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    downward = {"metadata.name": pod_name, "metadata.namespace": "kadapt-system"}
    for item in container["env"]:
        value = item.get("value") or downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        if value.startswith(mounts["config"] + "/"):
            value = str(config_dir) + value[len(mounts["config"]):]
        elif value == mounts["tmp"]:
            value = str(tmp / pod_name)
        env[item["name"]] = value
    argv = [*container["command"], *container["args"], "--kubeconfig", str(cluster.kubeconfig), "--fast"]
    proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        yield proc
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
    health, metrics = _free_port(), _free_port()
    r = render(_values(health, metrics, watch=watch))
    with Cluster(namespaces=NAMESPACES) as cluster, run_deployment(r, cluster, tmp_path, "kadapt-0") as proc:
        _wait(lambda: _get(f"http://127.0.0.1:{health}/healthz")[0] == 200, 90, "the liveness probe", proc)
        cluster.create(AJOBS, job_manifest("e2e-chart", "team-b"))
        job = _wait(lambda: cluster.get(JOBS, "team-b", "e2e-chart"), 60, "the training Job", proc)
        images = {c["image"] for c in job["spec"]["template"]["spec"]["containers"]}
        assert images == {f"{TRAINER['repository']}:{TRAINER['tag']}"}, "the chart's ConfigMap was not used"
        status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and "kadapt_" in text
        assert _assert_requests_allowed_by_chart_rbac(cluster, r) > 5


class _LogTail:
    """Reads a process's output as it comes (a full pipe would block it), for log lines to wait on."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.append(line)

    def text(self) -> str:
        return "".join(list(self._lines))


def _reconciles(metrics_port: int, handler: str) -> int:
    """Completed reconciles of one trigger, from the replica's /metrics (0 before the first)."""
    _, text = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    prefix = f'kadapt_operator_reconcile_duration_seconds_count{{handler="{handler}"}} '
    return sum(int(float(line[len(prefix):])) for line in text.splitlines() if line.startswith(prefix))


def test_two_replicas_peer_and_create_each_child_once(tmp_path: Path) -> None:
    h1, m1, h2, m2 = (_free_port() for _ in range(4))
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
        with run_deployment(renders[0], cluster, tmp_path, "kadapt-a") as p1, \
                run_deployment(renders[1], cluster, tmp_path, "kadapt-b") as p2:
            logs = {p1.pid: _LogTail(p1), p2.pid: _LogTail(p2)}
            _wait(lambda: _get(f"http://127.0.0.1:{h1}/healthz")[0] == 200, 90, "replica a", p1)
            _wait(lambda: _get(f"http://127.0.0.1:{h2}/healthz")[0] == 200, 90, "replica b", p2)

            def peers() -> dict[str, Any]:
                obj = cluster.get(PEERINGS, "team-a", "kadapt") or {}
                return dict(obj.get("status") or {})

            both = _wait(lambda: (lambda p: p if {"kadapt-a", "kadapt-b"} <= set(p) else None)(peers()), 60,
                         "both replicas in the peering")
            assert both["kadapt-a"]["priority"] != both["kadapt-b"]["priority"], "equal priorities freeze kopf"
            a_leads = both["kadapt-a"]["priority"] > both["kadapt-b"]["priority"]
            (active, active_metrics), (passive, passive_metrics) = (
                ((p1, m1), (p2, m2)) if a_leads else ((p2, m2), (p1, m1)))
            # kopf starts every replica paused and resumes the one its peering lets work; it says so in its log.
            resumed = "Resuming operations after the pause"
            _wait(lambda: resumed in logs[active.pid].text(), 60, "the active replica resumed", active)
            cluster.create(AJOBS, job_manifest("e2e-ha", "team-a"))
            _wait(lambda: cluster.get(JOBS, "team-a", "e2e-ha"), 60, "the training Job")
            # The active replica has looked at the job again since (two ticks after the Job): a second,
            # unpaused replica would have handled the job's creation in that time too.
            ticks = _reconciles(active_metrics, "tick")
            _wait(lambda: _reconciles(active_metrics, "tick") >= ticks + 2, 60, "two more ticks of the active replica",
                  active)
            creates = [rec for rec in _requests(cluster)
                       if (a := request_attributes(rec.method, rec.path)) is not None
                       and (a.verb, a.api_group, a.resource, a.namespace) == ("create", "batch", "jobs", "team-a")]
            assert len(creates) == 1, f"{len(creates)} Job creations: both replicas worked"
            assert _reconciles(passive_metrics, "spec") == 0, "the paused replica must not handle the job"
            passive_log = logs[passive.pid].text()  # it may have resumed before it saw its peer, then paused
            assert passive_log.rfind(resumed) <= passive_log.rfind("Pausing operations"), "the passive works"
            assert p1.poll() is None and p2.poll() is None
            _assert_requests_allowed_by_chart_rbac(cluster, renders[0])
