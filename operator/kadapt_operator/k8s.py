"""Kubernetes' own vocabulary, defined once for the renderer, the operator, the cost ledger and the local runner.

Timestamps as the API server writes them, the GPU extended resource and a pod's GPU count,
the Indexed Job's completion index, the pod condition that marks a disruption, and the
name of the trainer container. Pure: no client, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: Kubernetes' GPU extended resource (the NVIDIA device plugin's).
GPU_RESOURCE = "nvidia.com/gpu"
#: The completion index the Job controller writes on each pod of an Indexed Job (annotation and label).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: The label carrying the uid of the Job that owns a pod.
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
#: Pod condition the control plane sets before it evicts, preempts or drains a pod.
DISRUPTION_TARGET = "DisruptionTarget"
#: The trainer container of every worker pod (its start and end bound the GPU time).
TRAINER_CONTAINER = "trainer"


def as_utc(ts: datetime) -> datetime:
    """Naive datetimes are read as UTC; aware ones are converted to it."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or an offset, fractions allowed) as an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def format_time(ts: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; microseconds only when present (Kubernetes' own times have none)."""
    ts = as_utc(ts)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}"
    return text + "Z"


def kube_time(ts: datetime) -> datetime:
    """``ts`` in UTC at second precision, as Kubernetes stores timestamps (status, conditions)."""
    return as_utc(ts).replace(microsecond=0)


def container_gpus(container: Mapping[str, Any]) -> int:
    """GPUs one container requests: ``nvidia.com/gpu`` from its limits, else its requests."""
    resources = container.get("resources") or {}
    value = (resources.get("limits") or {}).get(GPU_RESOURCE, (resources.get("requests") or {}).get(GPU_RESOURCE))
    return 0 if value is None else int(float(str(value)))


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod (or a pod template) requests: the sum over its containers."""
    return sum(container_gpus(c) for c in (pod.get("spec") or {}).get("containers") or [])
