"""A real Prometheus server scrapes a real training run and the real operator.

The operator (kopf) runs against the API emulator; this test plays the Job controller and the
kubelet: it creates the pod the operator's Job asks for, runs it with the local executor (a
real ``torchrun`` of the trainer on a tiny model) and reports the pod Running at 127.0.0.1.
Prometheus (Debian package ``prometheus``) scrapes the trainer's rank-0 ``/metrics`` and the
operator's ``/metrics``; the test then reads cost and progress back through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV
from kadapt_trainer.ports import free_port
from tests.harness.emulator import AJOBS, CONFIGMAPS, JOBS, PODS, SERVICES, Cluster, job_manifest, wait_for
from tests.metrics.promref import check_against_reference, parse_reference, reference_source, scrape
from tests.trainer.tiny import classification_rows, make_model, write_jsonl

#: On PATH (Debian package, root install) or in the venv (scripts/install-prometheus.sh without root).
PROMETHEUS = shutil.which("prometheus") or shutil.which("prometheus", path=str(Path(sys.executable).parent))
NAMESPACE = "team-a"
JOB = "prom-e2e"
PRICE = 36.0  # per GPU-hour: one GPU-second costs 0.01

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="no prometheus binary on PATH or in the venv (Debian package prometheus); "
        "run scripts/install-prometheus.sh (root: apt-get; without root: apt-get download into .venv/bin)",
    ),
]


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Prometheus:
    """A Prometheus server on a free loopback port with a throw-away config and TSDB."""

    def __init__(self, folder: Path, targets: dict[str, dict[str, Any]]) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": name, "static_configs": [target]} for name, target in targets.items()
            ],
        }
        cfg = folder / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = (folder / "prometheus.log").open("w")
        assert PROMETHEUS is not None
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API: the result vector."""
        with urllib.request.urlopen(self.url("/api/v1/query", query=promql), timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()




def check_dashboard_queries(prom: Prometheus, job: str) -> None:
    """Run every query of the Grafana dashboard (variables filled in) against the real server."""
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "charts/kadapt/files/dashboard.json").read_text())
    exprs: dict[str, str] = {}

    def walk(node: Any, title: str) -> None:
        if isinstance(node, dict):
            title = node.get("title", title)
            if isinstance(node.get("expr"), str):
                exprs[f"{title}: {node['expr']}"] = node["expr"]
            for value in node.values():
                walk(value, title)
        elif isinstance(node, list):
            for value in node:
                walk(value, title)

    walk(dashboard["panels"], "")
    variables = {"$namespace": ".*", "$job": job, "$__range": "10m"}
    filled = dict(exprs)
    for name, value in variables.items():
        filled = {k: v.replace(name, value) for k, v in filled.items()}
    expected = ("Jobs by phase", "Progress", "Training loss", "Throughput", "Cost by namespace (dashboard range)",
                "Cost per live job", "GPUs allocated")

    missing: list[str] = list(expected)

    def all_showing() -> bool:
        results = {k: prom.query(v) for k, v in filled.items()}  # raises unless status == success
        showing = {k.split(":", 1)[0] for k, r in results.items() if r}
        missing[:] = [title for title in expected if title not in showing]
        return not missing

    # "Cost by namespace" is an increase() over the fleet cost counter: it shows something once
    # Prometheus holds two samples of it that differ, i.e. a state a few scrapes away, not a time.
    try:
        wait_for(all_showing, timeout=120, message="every main dashboard panel to show data")
    except AssertionError as exc:
        raise AssertionError(f"dashboard panels show nothing: {missing}") from exc


@pytest.fixture
def operator_metrics_port() -> Iterator[int]:
    """The operator's /metrics, served as ``kadapt operator`` serves it (the handlers' METRICS)."""
    from kadapt_operator.metrics import serve_metrics

    server = serve_metrics(0, addr="127.0.0.1")
    try:
        yield server.port
    finally:
        server.close()


def test_prometheus_scrapes_a_training_run_and_the_operator(tmp_path: Path, operator_metrics_port: int) -> None:
    from kadapt_operator.local.executor import ExecOptions, Gang, plan_pods

    progress_port = free_port()
    # The trainer holds after step 5 until the test stops it: it is still running (and scraped)
    # at every check below however fast this machine trains, and the stop lands mid-run.
    opts = ExecOptions(run_dir=tmp_path / "run", grace_seconds=60.0,
                       extra_env={"KADAPT_PROGRESS_PORT": str(progress_port), HOLD_AFTER_STEP_ENV: "5"})
    make_model(opts.pvc_root / "models" / "tiny-bert", "bert")
    write_jsonl(opts.pvc_root / "data" / "reviews.jsonl", classification_rows(60))
    manifest = job_manifest(
        JOB,
        NAMESPACE,
        # partial: many engine steps (cached head-only is one L-BFGS solve, see probe.py)
        strategy={"type": "partial", "partial": {"trainableLayers": 1}},
        # far more steps than the hold at step 5; the test stops it with SIGTERM
        training={"epochs": 1000, "globalBatchSize": 8, "microBatchSize": 8, "earlyStopping": {"enabled": False}},
        resources={"workers": 1, "gpusPerWorker": 1, "cpu": "1", "memory": "1Gi"},
    )
    settings = {"progress_port": progress_port, "gpu_prices": {"default": PRICE}, "poll_interval_seconds": 0.5}
    prometheus: Prometheus | None = None
    gang: Gang | None = None
    from kadapt_operator.metrics import METRICS  # what operator_metrics_port serves, as `kadapt operator` does

    with Cluster(namespaces=(NAMESPACE,)) as cluster, cluster.operator(settings_overrides=settings, metrics=METRICS):
        try:
            cluster.create(AJOBS, manifest)
            found = cluster.wait_for(lambda: cluster.get(JOBS, NAMESPACE, JOB), timeout=30, message="the Job")
            assert found is not None
            batch: dict[str, Any] = found
            cms = {cm["metadata"]["name"]: cm for cm in cluster.list(CONFIGMAPS, NAMESPACE)}
            service = cluster.get(SERVICES, NAMESPACE, JOB)
            plans = plan_pods(batch, cms, service, opts)
            assert len(plans) == 1
            # the Job controller creates pod 0; the kubelet starts it and reports it Running
            pod = cluster.make_pod(batch, 0, ip="127.0.0.1")
            pod_name = pod["metadata"]["name"]
            gang = Gang(plans)
            started = datetime.now(UTC)
            gang.start()
            cluster.set_status(PODS, NAMESPACE, pod_name, {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "startTime": rfc3339(started),
                "containerStatuses": [
                    {"name": "trainer", "ready": True, "restartCount": 0,
                     "state": {"running": {"startedAt": rfc3339(started)}}},
                ],
            })
            prometheus = prom = Prometheus(tmp_path / "prometheus", {
                "kadapt-operator": {"targets": [f"127.0.0.1:{operator_metrics_port}"]},
                "kadapt-trainer": {"targets": [f"127.0.0.1:{progress_port}"],
                                   # the target labels the chart's PodMonitor sets
                                   "labels": {"namespace": NAMESPACE, "pod": pod_name, "job_name": JOB}},
            })
            wait_for(prom.ready, timeout=60, message="Prometheus to get ready")

            # both targets are up and scraped
            def up() -> dict[str, float]:
                return {r["metric"]["job"]: float(r["value"][1]) for r in prom.query("up")}

            wait_for(
                lambda: up() == {"kadapt-operator": 1.0, "kadapt-trainer": 1.0},
                timeout=180, message="both targets up",
            )

            # the training run's own series: steps, target, loss, parameters
            steps = wait_for(
                lambda: prom.query(f'kadapt_trainer_steps_total{{namespace="{NAMESPACE}",pod="{pod_name}"}} > 0'),
                timeout=180, message="trainer steps > 0",
            )
            assert steps[0]["metric"]["job"] == "kadapt-trainer"
            target = float(prom.query("kadapt_trainer_target_steps")[0]["value"][1])
            assert prom.query("kadapt_trainer_train_loss")
            trainable = float(prom.query("kadapt_trainer_trainable_parameters")[0]["value"][1])
            total = float(prom.query("kadapt_trainer_parameters")[0]["value"][1])
            assert 0 < trainable < total  # partial: most of the backbone is frozen

            # the operator's series: progress and cost of this job, read from its status
            sel = f'namespace="{NAMESPACE}",job_name="{JOB}"'
            progress = wait_for(
                lambda: prom.query(f"kadapt_job_progress_ratio{{{sel}}} > 0"),
                timeout=120, message="operator progress > 0",
            )
            assert progress[0]["metric"]["job"] == "kadapt-operator"  # the scrape job; ours is job_name
            assert 0 < float(progress[0]["value"][1]) < 1
            cost = wait_for(lambda: prom.query(f"kadapt_job_cost{{{sel}}} > 0"), timeout=60, message="job cost > 0")
            assert float(cost[0]["value"][1]) > 0
            # cost = GPU seconds x price, in the same scrape
            gap = prom.query(f"abs(kadapt_job_cost{{{sel}}} - kadapt_job_gpu_seconds{{{sel}}} / 3600 * {PRICE})")
            assert gap and float(gap[0]["value"][1]) < 1e-3
            assert float(prom.query(f"kadapt_job_allocated_gpus{{{sel}}}")[0]["value"][1]) == 1
            assert prom.query(f'kadapt_job_phase{{{sel},phase="Running"}} == 1')
            by_ns = wait_for(
                lambda: prom.query(f'sum by (namespace) (kadapt_gpu_cost_total{{namespace="{NAMESPACE}"}}) > 0'),
                timeout=30, message="fleet cost by namespace",
            )
            assert by_ns[0]["metric"] == {"namespace": NAMESPACE}
            gpu_seconds = prom.query(
                f'kadapt_gpu_seconds_total{{namespace="{NAMESPACE}",queue="none",gpu_type="default"}}'
            )
            assert gpu_seconds and float(gpu_seconds[0]["value"][1]) > 0
            projected = wait_for(
                lambda: prom.query(f"kadapt_job_projected_cost{{{sel}}}"), timeout=60, message="projected cost",
            )
            assert float(projected[0]["value"][1]) >= float(cost[0]["value"][1])
            # every dashboard query is valid PromQL on real data; the main panels show this job
            check_dashboard_queries(prom, JOB)
            # the status agrees with what Prometheus saw (same source)
            status = (cluster.get(AJOBS, NAMESPACE, JOB) or {}).get("status", {})
            assert status["cost"]["pricePerGPUHour"] == PRICE
            assert status["cost"]["gpuSeconds"] > 0
            assert status["progress"]["totalSteps"] == target >= 1000  # 1000 epochs of at least one step
            # the real operator's exposition matches the reference
            scraped = scrape(f"http://127.0.0.1:{operator_metrics_port}/metrics")
            check_against_reference(scraped, parse_reference(reference_source().read_text()), "kadapt_")
            # the gang stops on SIGTERM: the trainer checkpoints before it exits
            gang.stop()
            result = gang.result()
            assert result.exit_codes[0] is not None, result
            log = plans[0].log_path.read_text()
            assert "stopped by signal; checkpoint saved" in log, log[-2000:]
            assert (opts.pvc_root / "out" / JOB / "checkpoints" / "latest").exists()

            # deleting the AdaptationJob removes its per-job series from the operator's /metrics
            def job_series() -> list[str]:
                families = scrape(f"http://127.0.0.1:{operator_metrics_port}/metrics")
                return [f.name for f in families.values() for s in f.samples if s.labels.get("job_name") == JOB]

            assert job_series()
            cluster.delete(AJOBS, NAMESPACE, JOB)
            wait_for(lambda: not job_series(), timeout=20, message="the job's series gone")
        finally:
            if gang is not None:
                gang.stop(grace=5)
            if prometheus is not None:
                prometheus.close()
