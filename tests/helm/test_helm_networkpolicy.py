"""The chart's NetworkPolicy admits exactly who must reach the training pods the operator renders.

The policy's selectors are matched against real objects: the training pods of a rendered
example job (``kadapt render``) and the operator pods of the rendered Deployment, so a renamed
label or a moved port breaks this test rather than a default-deny cluster.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import yaml

from kadapt_operator.render import render as render_job
from kadapt_operator.settings import OperatorSettings
from kadapt_operator.validation import validate_object
from tests.conftest import EXAMPLES
from tests.helm.chart import NAMESPACE, Rendered, render

K8S_VERSIONS = ("1.29", "1.32")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _admits(policy: dict[str, Any], namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether ``policy`` admits a pod (``labels`` in ``namespace``) to ``port`` of the selected pods."""
    own = policy["metadata"]["namespace"]
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port for p in ports):
            continue
        for peer in rule.get("from", []):
            ns_sel = peer.get("namespaceSelector")
            ns_ok = _selects(ns_sel, {"kubernetes.io/metadata.name": namespace}) if ns_sel is not None else (
                namespace == own
            )
            pod_ok = _selects(peer["podSelector"], labels) if "podSelector" in peer else True
            if ns_ok and pod_ok:
                return True
    return False


def _trainer_pod(namespace: str) -> tuple[dict[str, str], int]:
    """Labels and metrics port of a training pod the operator would create in ``namespace``."""
    doc = yaml.safe_load((EXAMPLES / "full.yaml").read_text())
    doc["metadata"]["namespace"] = namespace
    objects = render_job(validate_object(doc), OperatorSettings()).objects()
    job = next(o for o in objects if o["kind"] == "Job")
    template = job["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    return dict(template["metadata"]["labels"]), ports["metrics"]


def _rendered() -> Rendered:
    return render({"watch": {"namespaces": ["team-a", "team-b"]}, "networkPolicy": {"enabled": True}})


def test_off_by_default() -> None:
    assert render({}).of_kind("NetworkPolicy") == []


def test_one_valid_policy_per_served_namespace() -> None:
    policies = _rendered().of_kind("NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    for policy in policies:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(policy, version, strict=True)
    explicit = render({"watch": {"allNamespaces": True}, "networkPolicy": {"enabled": True, "namespaces": ["ml"]}})
    assert [p["metadata"]["namespace"] for p in explicit.of_kind("NetworkPolicy")] == ["ml"]


def test_admits_operator_prometheus_and_the_gang_and_nobody_else() -> None:
    rendered = _rendered()
    operator_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    for policy in rendered.of_kind("NetworkPolicy"):
        ns = policy["metadata"]["namespace"]
        trainer_labels, port = _trainer_pod(ns)
        assert _selects(policy["spec"]["podSelector"], trainer_labels), "the policy must select training pods"
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert _admits(policy, NAMESPACE, operator_labels, port), "the operator must reach /progress"
        assert _admits(policy, "monitoring", prometheus, port), "Prometheus must reach /metrics"
        assert _admits(policy, ns, trainer_labels, 29500), "workers must reach pod 0's rendezvous"
        assert _admits(policy, ns, trainer_labels, 41234), "collectives use ports of their own"
        assert not _admits(policy, ns, {"app": "web"}, port), "other pods of the namespace stay out"
        assert not _admits(policy, "team-z", operator_labels, port), "the operator's labels elsewhere do not count"
        assert not _admits(policy, "monitoring", prometheus, 29500), "Prometheus only gets the metrics port"


def test_follows_the_progress_port_and_the_prometheus_peers() -> None:
    rendered = render({"networkPolicy": {"enabled": True, "prometheusFrom": []}, "config": {"progressPort": 9400}})
    policy = rendered.one("NetworkPolicy")
    operator_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _admits(policy, NAMESPACE, operator_labels, 9400)
    assert not _admits(policy, "monitoring", {"app.kubernetes.io/name": "prometheus"}, 9400)
