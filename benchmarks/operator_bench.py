"""Operator benchmarks: kadapt's operator side by side with a minimal kopf operator (the floor).

Both run as real processes against the same KMock emulator over HTTP, one after the other
in one run, so that the machine's load is shared alike; the figures that matter are the
ratios to the floor.

1. Burst: ``--burst`` AdaptationJobs created over HTTP at once; per job, the time from its
   creation to its batch/v1 Job being created (kadapt) or its status being patched (floor),
   p50 and p99.
2. Restart: ``--preload`` AdaptationJobs put straight into the emulator's store (not through
   HTTP, as if they existed before the operator started); the time from starting the
   operator process until every one is reconciled (kadapt: Job created and status written;
   floor: status written), the API requests per job, and the operator's peak RSS.

Usage: ``python benchmarks/operator_bench.py [--burst 200] [--preload 500] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "trainer")]

from tests.harness.emulator import AJOBS, Cluster, job_manifest  # noqa: E402

NS = "bench"
FLOOR = ROOT / "benchmarks" / "operator_floor.py"


@dataclass
class Figures:
    """One operator's figures."""

    operator: str
    burst_jobs: int
    burst_p50_s: float
    burst_p99_s: float
    burst_all_s: float
    preload_jobs: int
    restart_all_s: float
    restart_after_watch_s: float
    requests_per_job: float
    peak_rss_mib: float


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start(kind: str, cluster: Cluster, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": os.pathsep.join(sys.path[:3])}
    log = open(workdir / f"{kind}.log", "ab")  # noqa: SIM115 - closed with the process
    if kind == "floor":
        cmd = [sys.executable, "-m", "kopf", "run", "--standalone", "-n", NS, "--log-format=plain", str(FLOOR)]
    else:
        settings = workdir / "operator.yaml"
        settings.write_text("trainerImage: registry.example/kadapt-trainer:bench\ngpuPrices: {default: 2.0}\n")
        cmd = [
            sys.executable,
            "-m",
            "kadapt_operator.runtime.cli",
            "--namespace",
            NS,
            "--standalone",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--settings",
            str(settings),
            "--no-metrics",
            "--fast",
        ]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _watching(cluster: Cluster) -> bool:
    """Whether the operator has started reading AdaptationJobs (its first list, or watch)."""
    return any(r.method == "GET" and r.path.endswith("/adaptationjobs") for r in cluster.operator_requests())


def _done_key(kind: str, name: str) -> tuple[str, str | None, str]:
    return ("jobs", NS, name) if kind == "kadapt" else ("adaptationjobs/status", NS, name)


def _reconciled(kind: str, cluster: Cluster, names: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        def read() -> bool:
            t = cluster.emulator.timeline
            if not all(_done_key(kind, n) in t for n in names):
                return False
            return kind == "floor" or all(("adaptationjobs/status", NS, n) in t for n in names)

        return cluster.in_loop(read)

    return check


def burst(kind: str, n: int, workdir: Path) -> tuple[list[float], float]:
    """Per-job latency from create to reconciled, for ``n`` jobs created at once over HTTP."""
    with Cluster(namespaces=(NS,)) as cluster:
        proc = _start(kind, cluster, workdir)
        try:
            cluster.wait_for(lambda: _watching(cluster), timeout=60, interval=0.1, message="operator watching")
            time.sleep(2.0)  # let kopf finish its initial listing (kadapt: its indexes)
            names = [f"burst-{i:04d}" for i in range(n)]
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda name: cluster.create(AJOBS, job_manifest(name, NS)), names))
            cluster.wait_for(_reconciled(kind, cluster, names), timeout=600, interval=0.2, message="burst")
            timeline = dict(cluster.in_loop(lambda: dict(cluster.emulator.timeline)))
            lat = [timeline[_done_key(kind, n)] - timeline[("adaptationjobs", NS, n)] for n in names]
            return lat, max(timeline[_done_key(kind, n)] for n in names) - t0
        finally:
            _stop(proc)


def restart(kind: str, n: int, workdir: Path) -> tuple[float, float, float, float]:
    """Start the operator on ``n`` stored jobs: (s to all, s after its first list, requests/job, MiB)."""
    with Cluster(namespaces=(NS,)) as cluster:
        names = [f"pre-{i:04d}" for i in range(n)]
        for name in names:
            cluster.store(AJOBS, job_manifest(name, NS))
        t0 = time.monotonic()
        proc = _start(kind, cluster, workdir)
        try:
            cluster.wait_for(lambda: _watching(cluster), timeout=60, interval=0.05, message="operator watching")
            t_watch = time.monotonic()
            cluster.wait_for(_reconciled(kind, cluster, names), timeout=900, interval=0.2, message="restart")
            t1 = time.monotonic()
            requests = len(cluster.operator_requests())
            rss = _rss_mib(proc.pid)
            return t1 - t0, t1 - t_watch, requests / n, rss
        finally:
            _stop(proc)


def measure(kind: str, burst_n: int, preload_n: int, workdir: Path) -> Figures:
    lat, burst_all = burst(kind, burst_n, workdir)
    total, after_watch, per_job, rss = restart(kind, preload_n, workdir)
    return Figures(
        operator=kind,
        burst_jobs=burst_n,
        burst_p50_s=statistics.median(lat),
        burst_p99_s=_pct(lat, 0.99),
        burst_all_s=burst_all,
        preload_jobs=preload_n,
        restart_all_s=total,
        restart_after_watch_s=after_watch,
        requests_per_job=per_job,
        peak_rss_mib=rss,
    )


def table(floor: Figures, kadapt: Figures) -> str:
    rows: list[tuple[str, str, Any, Any]] = [
        (f"create -> reconciled, p50 ({floor.burst_jobs} at once)", "s", floor.burst_p50_s, kadapt.burst_p50_s),
        (f"create -> reconciled, p99 ({floor.burst_jobs} at once)", "s", floor.burst_p99_s, kadapt.burst_p99_s),
        ("burst: all reconciled after the first create", "s", floor.burst_all_s, kadapt.burst_all_s),
        (
            f"restart with {floor.preload_jobs} stored: start -> all reconciled",
            "s",
            floor.restart_all_s,
            kadapt.restart_all_s,
        ),
        (
            "restart: first list of jobs -> all reconciled",
            "s",
            floor.restart_after_watch_s,
            kadapt.restart_after_watch_s,
        ),
        ("API requests per job (restart)", "", floor.requests_per_job, kadapt.requests_per_job),
        ("operator peak RSS (restart)", "MiB", floor.peak_rss_mib, kadapt.peak_rss_mib),
    ]
    out = ["| measure | unit | floor (minimal kopf) | kadapt | ratio |", "|---|---|---:|---:|---:|"]
    for label, unit, f, k in rows:
        ratio = k / f if f else float("nan")
        out.append(f"| {label} | {unit} | {f:.3f} | {k:.3f} | {ratio:.2f}x |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--preload", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kadapt-bench-") as tmp:
        workdir = Path(tmp)
        floor = measure("floor", args.burst, args.preload, workdir)
        kadapt = measure("kadapt", args.burst, args.preload, workdir)
    print(table(floor, kadapt))
    if args.json:
        args.json.write_text(json.dumps({"floor": asdict(floor), "kadapt": asdict(kadapt)}, indent=2))


if __name__ == "__main__":
    main()
