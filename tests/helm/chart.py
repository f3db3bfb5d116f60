"""Render the kadapt chart with the real Helm v4 library (PyPI ``helm-python-sdk``).

``helm-python-sdk`` binds Helm's Go SDK through ``libhelm_c``; its ``Chart.render`` is
``helm template``. Rendering with extra API versions (``helm template --api-versions``)
is an option of the same C call that the Python wrapper does not expose, so
``render`` passes it through ``helm_python._native`` directly.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import yaml
from helm_python import _native

from kadapt_operator.permissions import Mode

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "kadapt"
RELEASE = "kadapt"
NAMESPACE = "kadapt-system"
KUBE_VERSION = "v1.31.0"
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
MONITORING_APIS = ("monitoring.coreos.com/v1", *(f"monitoring.coreos.com/v1/{k}" for k in MONITORING_KINDS))


@dataclass(frozen=True)
class Case:
    """One documented way to install the chart."""

    name: str
    values: dict[str, Any]
    mode: Mode
    watched: tuple[str, ...]
    api_versions: tuple[str, ...] = ()
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ALL_MONITORING = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}

CASES: tuple[Case, ...] = (
    Case("default", {}, Mode(), (NAMESPACE,)),
    Case("namespaced", {"watch": {"namespaces": ["team-a", "team-b"]}}, Mode(), ("team-a", "team-b")),
    Case("all-namespaces", {"watch": {"allNamespaces": True}}, Mode(all_namespaces=True), ()),
    Case("monitoring", {"monitoring": ALL_MONITORING}, Mode(), (NAMESPACE,), api_versions=MONITORING_APIS),
    Case("two-replicas", {"replicaCount": 2, "watch": {"namespaces": ["team-a", "team-b"]}},
         Mode(peering=True), ("team-a", "team-b")),
    Case("two-replicas-all-namespaces", {"replicaCount": 2, "watch": {"allNamespaces": True}},
         Mode(all_namespaces=True, peering=True), ()),
    Case("network-policy", {"watch": {"namespaces": ["team-a", "team-b"]}, "networkPolicy": {"enabled": True}},
         Mode(), ("team-a", "team-b")),
)
CASE_IDS = [c.name for c in CASES]


@functools.cache
def chart() -> helm_python.Chart:
    """The chart, loaded once (Helm charts are immutable handles)."""
    return helm_python.Chart.load(CHART_DIR)


@dataclass(frozen=True)
class Rendered:
    """What ``helm template`` printed: manifests by template and the parsed objects."""

    files: dict[str, str]

    @property
    def notes(self) -> str:
        return next((v for k, v in self.files.items() if k.endswith("NOTES.txt")), "")

    @functools.cached_property
    def objects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, text in sorted(self.files.items()):
            if name.endswith("NOTES.txt"):
                continue
            out.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return out

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
        return found[0]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    api_versions: Sequence[str] = (),
    namespace: str = NAMESPACE,
) -> Rendered:
    """``helm template kadapt charts/kadapt -n NAMESPACE [--api-versions ...]`` (schema checked first).

    Raises:
        helm_python.HelmValuesError: values rejected by values.schema.json.
        helm_python.HelmRenderError: a template failed (e.g. a ``fail`` with a message).
    """
    opts = {"name": RELEASE, "namespace": namespace, "is_install": True, "kube_version": KUBE_VERSION,
            "api_versions": list(api_versions)}
    payload = _native.call_string(
        "helm_render", chart()._raw(), json.dumps(copy.deepcopy(dict(values or {}))), json.dumps(opts)
    )
    files: dict[str, str] = json.loads(payload)
    return Rendered(files)


_CASE_RENDERS: dict[str, Rendered] = {}


def render_case(case: Case) -> Rendered:
    """``render`` of a documented case, once per test session (tests only read it)."""
    if case.name not in _CASE_RENDERS:
        _CASE_RENDERS[case.name] = render(case.values, api_versions=case.api_versions)
    return _CASE_RENDERS[case.name]
