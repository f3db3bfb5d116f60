"""Reading what the operator did, from the emulator's store: status, conditions, Events, creations."""

from __future__ import annotations

from typing import Any

import kmock

from tests.harness.emulator import AJOBS, EVENTS, JOBS, PODS, Cluster, running_status


def status_of(cluster: Cluster, name: str, ns: str) -> dict[str, Any]:
    """The AdaptationJob's status ({} when absent)."""
    obj = cluster.get(AJOBS, ns, name) or {}
    return obj.get("status") or {}


def condition(cluster: Cluster, name: str, ns: str, type_: str) -> dict[str, Any] | None:
    """One condition of the AdaptationJob's status."""
    for c in status_of(cluster, name, ns).get("conditions") or []:
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return None


def events_for(cluster: Cluster, name: str, ns: str) -> list[dict[str, Any]]:
    """Events whose involvedObject is the named object."""
    return [e for e in cluster.list(EVENTS, ns) if e.get("involvedObject", {}).get("name") == name]


def creations(cluster: Cluster, resource: str, ns: str, name: str) -> int:
    """How many times an object of that name came into existence (the store keeps its history)."""

    def count() -> int:
        key = (kmock.resource(resource), ns, name)
        if key not in cluster.emulator.objects:
            return 0
        n, alive = 0, False
        for version in cluster.emulator.objects[key].history:
            if version is not None and not alive:
                n += 1
            alive = version is not None
        return n

    return cluster.in_loop(count)


def start_gang(
    cluster: Cluster, name: str, ns: str, workers: int = 2, ip: str = "127.0.0.1", progress_port: int | None = None
) -> list[dict[str, Any]]:
    """Play the Job controller and the kubelet: create the Job's pods and make them run."""
    job = cluster.wait_for(lambda: cluster.get(JOBS, ns, name), message=f"Job {name}")
    assert job is not None
    pods = []
    for i in range(workers):
        pod = cluster.make_pod(job, i, progress_port=progress_port)
        cluster.set_status(PODS, ns, pod["metadata"]["name"], running_status(ip))
        pods.append(pod)
    return pods
