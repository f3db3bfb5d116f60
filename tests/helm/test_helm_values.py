"""values.schema.json and the chart's own checks reject bad values with a message naming the key."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import pytest
import yaml

from tests.helm.chart import CHART_DIR, chart, render

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("zero replicas", {"replicaCount": 0}, "/replicaCount"),
    ("replicas as text", {"replicaCount": "two"}, "/replicaCount"),
    ("typo at top level", {"replicas": 2}, "'replicas' not allowed"),
    ("typo in a section", {"watch": {"namespace": ["a"]}}, "'namespace' not allowed"),
    ("namespace not a DNS label", {"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ("duplicate namespaces", {"watch": {"namespaces": ["a", "a"]}}, "/watch/namespaces"),
    ("price table without default", {"config": {"gpuPrices": {"default": None, "a100": 3}}},
     "missing property 'default'"),
    ("negative price", {"config": {"gpuPrices": {"default": -1}}}, "/config/gpuPrices/default"),
    ("price as text", {"config": {"gpuPrices": {"default": "cheap"}}}, "/config/gpuPrices/default"),
    ("currency not ISO 4217", {"config": {"currency": "dollars"}}, "/config/currency"),
    ("poll interval zero", {"config": {"pollIntervalSeconds": 0}}, "/config/pollIntervalSeconds"),
    ("queue name with spaces", {"config": {"defaultQueueName": "my queue"}}, "/config/defaultQueueName"),
    ("non-positive namespace budget", {"config": {"namespaceBudgets": {"team-a": 0}}},
     "/config/namespaceBudgets/team-a"),
    ("unknown budget period", {"config": {"namespaceBudgetPeriod": "year"}}, "/config/namespaceBudgetPeriod"),
    ("image tag with a space", {"image": {"tag": "v1 latest"}}, "/image/tag"),
    ("malformed digest", {"image": {"digest": "sha256:xyz"}}, "/image/digest"),
    ("bad pull policy", {"config": {"trainerImage": {"pullPolicy": "Sometimes"}}},
     "/config/trainerImage/pullPolicy"),
    ("port out of range", {"metrics": {"port": 70000}}, "/metrics/port"),
    ("root user", {"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ("privilege escalation", {"securityContext": {"allowPrivilegeEscalation": True}},
     "/securityContext/allowPrivilegeEscalation"),
    ("root pod", {"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ("bad scrape interval", {"monitoring": {"serviceMonitor": {"interval": "often"}}},
     "/monitoring/serviceMonitor/interval"),
    ("annotations not strings", {"podAnnotations": {"a": {"b": 1}}}, "/podAnnotations/a"),
    ("network policy typo", {"networkPolicy": {"enable": True}}, "/networkPolicy"),
    ("network policy peer typo", {"networkPolicy": {"prometheusFrom": [{"namespaceSelecter": {}}]}},
     "/networkPolicy/prometheusFrom/0"),
]


@pytest.mark.parametrize(("values", "where"), [(v, w) for _, v, w in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as err:
        render(values)
    assert where in str(err.value), str(err.value)
    with pytest.raises(helm_python.HelmValuesError):
        chart().validate_schema(values)


TEMPLATE_CHECKS: list[tuple[str, dict[str, Any], str]] = [
    ("all namespaces and a list", {"watch": {"allNamespaces": True, "namespaces": ["a"]}},
     "watch.namespaces must be empty when watch.allNamespaces is true"),
    ("backoff max below first", {"config": {"restartBackoffSeconds": 60, "restartBackoffMaxSeconds": 10}},
     "config.restartBackoffMaxSeconds must be at least config.restartBackoffSeconds"),
    ("metrics on the health port", {"metrics": {"port": 8080}}, "metrics.port and health.port must differ"),
    ("network policy in every namespace", {"watch": {"allNamespaces": True}, "networkPolicy": {"enabled": True}},
     "networkPolicy.enabled with watch.allNamespaces needs networkPolicy.namespaces"),
    ("metrics on the progress port", {"metrics": {"port": 9090}}, "metrics.port and config.progressPort must differ"),
    ("no ServiceAccount named", {"serviceAccount": {"create": False}},
     "serviceAccount.name is required when serviceAccount.create is false"),
]


@pytest.mark.parametrize(("values", "message"), [(v, m) for _, v, m in TEMPLATE_CHECKS],
                         ids=[n for n, _, _ in TEMPLATE_CHECKS])
def test_cross_field_checks_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError) as err:
        render(values)
    assert message in str(err.value)


GOOD_VALUES: list[dict[str, Any]] = [
    {"config": {"gpuPrices": {"default": 0, "nvidia-a100-80gb": 3.67, "nvidia.h100": 4.1}}},
    {"image": {"repository": "registry.internal:5000/ml/kadapt-operator", "tag": "0.1.0-rc.1"}},
    {"podDisruptionBudget": {"minAvailable": "50%"}, "replicaCount": 3},
    {"config": {"defaultQueueName": "team-a-queue", "namespaceBudgets": {"team-a": 1000.5}}},
    {"serviceAccount": {"create": False, "name": "platform-provided"}, "rbac": {"create": False}},
    {"extraEnv": [{"name": "KADAPT_CURRENCY", "value": "EUR"}], "extraArgs": ["--verbose"]},
]


@pytest.mark.parametrize("values", GOOD_VALUES)
def test_reasonable_values_are_accepted(values: dict[str, Any]) -> None:
    chart().validate_schema(values)
    assert render(values).one("Deployment")


def test_default_values_pass_the_schema() -> None:
    chart().validate_schema(None)
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), "every top-level value is described by the schema"


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml's leaves (maps that default to {} or [] count as leaves)."""
    if isinstance(node, dict) and node and prefix not in ("resources", "podSecurityContext", "securityContext",
                                                          "config.gpuPrices"):
        return [k for key, value in node.items() for k in _leaf_keys(value, f"{prefix}.{key}".lstrip("."))]
    return [prefix]


def test_readme_values_table_lists_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    leaves = set(_leaf_keys(yaml.safe_load((CHART_DIR / "values.yaml").read_text())))
    assert leaves - documented == set(), "values missing from the README table"
    assert documented - leaves == set(), "README documents values the chart does not have"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for key, default in re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", readme, re.M):
        node = values
        for part in key.split("."):
            node = node[part]
        assert json.loads(default.replace("\\|", "|")) == node, f"README default of {key} is stale"
