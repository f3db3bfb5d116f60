"""Two peered operators: only the active replica does the periodic work and counts fleet cost.

kopf pauses the handlers of a replica that a higher-priority peer outranks, but kadapt's
periodic task (cost accrual, budget stops, backoff restarts, deadlines, TTL) is its own; it
must pause too. Replica A works alone first (its periodic task is running), then B, with a
higher priority, joins: from then on only B's fleet counters may grow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kmock
import yaml

from kadapt_operator.metrics import OperatorMetrics
from kadapt_operator.runtime.options import RuntimeOptions
from kadapt_operator.runtime.startup import run_operator
from kadapt_operator.runtime.world import Runtime
from kadapt_operator.settings import OperatorSettings
from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CRDS,
    TEST_SETTINGS,
    Cluster,
    OperatorHandle,
    job_manifest,
    wait_for,
)

NS = "team-a"
PEERING = "kadapt"
PEERINGS = "kopf.dev/v1/kopfpeerings"
PEERING_CRDS = Path(__file__).resolve().parents[2] / "charts" / "kadapt" / "crds" / "kopf-peering.yaml"


def _install_peering(cluster: Cluster) -> None:
    docs = yaml.safe_load_all(PEERING_CRDS.read_text())
    crd = next(d for d in docs if d["spec"]["names"]["plural"] == "kopfpeerings")

    def install() -> None:
        cluster.emulator.resources[PEERINGS] = kmock.ResourceInfo(
            kind="KopfPeering", singular="kopfpeering", namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        cluster.emulator.store(CRDS, crd)
        cluster.emulator.store(PEERINGS, {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                          "metadata": {"name": PEERING, "namespace": NS}})

    cluster.in_loop(install)


@contextmanager
def replica(cluster: Cluster, identity: str, priority: int) -> Iterator[OperatorHandle]:
    """A peered operator replica in a thread, with its own metrics and a known identity."""
    settings = OperatorSettings.model_validate(TEST_SETTINGS)
    options = RuntimeOptions(namespaces=(NS,), standalone=False, peering_name=PEERING, priority=priority,
                             kubeconfig=cluster.kubeconfig, fast=True)
    runtime = Runtime(settings=settings, options=options, metrics=OperatorMetrics(), identity=identity)
    stop, ready = threading.Event(), threading.Event()
    handle = OperatorHandle(thread=threading.Thread(), stop_flag=stop, ready_flag=ready, runtime=runtime)

    def target() -> None:
        try:
            asyncio.run(run_operator(settings, options, stop_flag=stop, ready_flag=ready, runtime=runtime))
        except BaseException as exc:
            handle.errors.append(exc)
            ready.set()

    handle.thread = threading.Thread(target=target, name=f"kadapt-{identity}", daemon=True)
    handle.thread.start()
    try:
        assert ready.wait(30), f"replica {identity} did not start: {handle.errors}"
        yield handle
    finally:
        handle.stop()


def fleet_gpu_seconds(handle: OperatorHandle) -> float:
    text = handle.runtime.metrics.render().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kadapt_gpu_seconds_total{"))


def test_only_the_active_replica_ticks_and_counts_fleet_cost() -> None:
    with Cluster(namespaces=(NS,)) as cluster:
        _install_peering(cluster)
        with replica(cluster, "replica-a", 100) as a:
            cluster.create(AJOBS, job_manifest("shared", NS))
            checks.start_gang(cluster, "shared", NS)
            cluster.wait_for(lambda: fleet_gpu_seconds(a) > 0, message="A accrues while alone")
            with replica(cluster, "replica-b", 200) as b:
                peers = lambda: (cluster.get(PEERINGS, NS, PEERING) or {}).get("status") or {}  # noqa: E731
                wait_for(lambda: {"replica-a", "replica-b"} <= set(peers()), message="both replicas in the peering")
                b.wait_handled(NS, "shared", more=3, trigger="tick")  # B is active and ticking
                before = fleet_gpu_seconds(a)
                b.wait_handled(NS, "shared", more=10, trigger="tick")
                assert fleet_gpu_seconds(b) > 0, "the active replica counts the fleet cost"
                assert fleet_gpu_seconds(a) == before, "a paused replica must not tick or count"
                assert a.errors == [] and b.errors == []


def exported(handle: OperatorHandle) -> set[str]:
    """The metric names (families and their series) this replica's /metrics shows."""
    text = handle.runtime.metrics.render().decode()
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


#: What only the active replica may export: fleet counters, jobs by phase, per-job gauges.
FLEET = {"kadapt_gpu_seconds_total", "kadapt_gpu_cost_total", "kadapt_jobs", "kadapt_job_phase",
         "kadapt_job_gpu_seconds"}


def test_a_paused_replica_exports_no_stale_fleet_metrics() -> None:
    with Cluster(namespaces=(NS,)) as cluster:
        _install_peering(cluster)
        with replica(cluster, "replica-a", 100) as a:
            cluster.create(AJOBS, job_manifest("watched", NS))
            checks.start_gang(cluster, "watched", NS)
            cluster.wait_for(lambda: exported(a) >= FLEET, message="A exports the fleet metrics while alone")
            with replica(cluster, "replica-b", 200) as b:
                peers = lambda: (cluster.get(PEERINGS, NS, PEERING) or {}).get("status") or {}  # noqa: E731
                wait_for(lambda: {"replica-a", "replica-b"} <= set(peers()), message="both replicas in the peering")
                b.wait_handled(NS, "watched", more=3, trigger="tick")  # B is active and ticking
                cluster.wait_for(lambda: exported(b) >= FLEET, message="B, active, exports the fleet metrics")
                wait_for(lambda: not FLEET & exported(a), message="A, paused, stops exporting the fleet metrics")
                b.wait_handled(NS, "watched", more=5, trigger="tick")
                assert not FLEET & exported(a), "a paused replica must not export stale fleet values"
                assert "kadapt_operator_info" in exported(a), "its own process metrics stay"
            # B is gone (kopf takes it out of the peering on exit): A is active again and exports.
            wait_for(lambda: exported(a) >= FLEET, message="A exports again once it is the active replica")
            assert fleet_gpu_seconds(a) > 0
            assert a.errors == []
