"""Monitoring assets: the Grafana dashboard, the alert rules and the README's metrics reference."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .promref import ROOT, MetricRef, parse_reference

FILES = ROOT / "charts" / "kadapt" / "files"
DASHBOARD = FILES / "dashboard.json"
RULES = FILES / "prometheus-rules.yaml"
METRIC_TOKEN = re.compile(r"\bkadapt_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed; run scripts/install-prometheus.sh"
)


def metric_names(expr: str, reference: dict[str, MetricRef]) -> set[str]:
    """The reference names an expression queries (histogram series mapped to their family)."""
    names = set()
    for token in METRIC_TOKEN.findall(expr):
        base = token
        for suffix in HISTOGRAM_SUFFIXES:
            if token.endswith(suffix) and token[: -len(suffix)] in reference:
                base = token[: -len(suffix)]
        names.add(base)
    return names


def walk(node: Any) -> list[dict[str, Any]]:
    """Every dict in a JSON tree."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            out.extend(walk(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(walk(v))
    return out


# --- dashboard -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def test_dashboard_uses_a_datasource_variable_and_no_fixed_uid(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds_vars = [v for v in variables.values() if v["type"] == "datasource" and v["query"] == "prometheus"]
    assert len(ds_vars) == 1
    ref = "${" + ds_vars[0]["name"] + "}"
    datasources = [d["datasource"] for d in walk(dashboard) if "datasource" in d]
    assert datasources, "no panel names a datasource"
    for ds in datasources:
        assert isinstance(ds, dict) and ds == {"type": "prometheus", "uid": ref}, ds
    assert "__inputs" not in dashboard or dashboard["__inputs"] == []  # not an export bound to one instance


def test_dashboard_queries_only_reference_metrics(dashboard: dict[str, Any], reference: dict[str, MetricRef]) -> None:
    exprs = [d["expr"] for d in walk(dashboard) if isinstance(d.get("expr"), str)]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr, reference)
        assert names, f"query uses no kadapt metric: {expr}"
        unknown = names - reference.keys()
        assert not unknown, f"{expr}: {sorted(unknown)} not in the metrics reference"
        used |= names
    # the dashboard covers jobs, progress, loss, throughput, GPU utilisation and cost by namespace
    for needed in ("kadapt_jobs", "kadapt_job_progress_ratio", "kadapt_trainer_train_loss",
                   "kadapt_trainer_samples_per_second", "kadapt_trainer_gpu_utilization_ratio",
                   "kadapt_gpu_cost_total"):
        assert needed in used, needed


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["refId"] for t in p["targets"]), p["title"]
    used_vars = {m for d in walk(dashboard) for v in d.values() if isinstance(v, str)
                 for m in re.findall(r"\$(\w+)", v)}
    declared = {v["name"] for v in dashboard["templating"]["list"]} | {"__range", "__interval"}
    assert used_vars <= declared, used_vars - declared


# --- alert rules ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    data = yaml.safe_load(RULES.read_text())
    assert isinstance(data, dict) and list(data) == ["groups"]
    return data


def test_rules_query_only_reference_metrics(rules: dict[str, Any], reference: dict[str, MetricRef]) -> None:
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"KadaptJobFailingRepeatedly", "KadaptJobStalled", "KadaptJobBudgetNearlySpent"} <= alerts.keys()
    for name, rule in alerts.items():
        names = metric_names(rule["expr"], reference)
        assert names and names <= reference.keys(), f"{name}: {sorted(names - reference.keys())}"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _alert(name: str, at: str, labels: list[dict[str, str]] | None) -> dict[str, Any]:
    """One alert_rule_test entry; ``labels`` None means the alert must not fire."""
    return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": lab} for lab in labels or []]}


@needs_promtool
def test_alerts_fire_when_they_should_and_only_then(tmp_path: Path, rules: dict[str, Any]) -> None:
    """promtool's rule unit tests, on series shaped like what the operator exports."""
    assert PROMTOOL is not None
    # Annotations are templated; compare labels only by rendering rules without annotations.
    stripped = {"groups": [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
                           for g in rules["groups"]]}
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump(stripped))
    a = {"namespace": "team-a", "job_name": "sst2"}
    b = {"namespace": "team-a", "job_name": "llm"}
    tests = [
        {   # two restarts within the hour fire; one does not
            "interval": "1m",
            "input_series": [
                {"series": 'kadapt_job_restart_count{namespace="team-a",job_name="sst2"}', "values": "0x10 1x10 2x10"},
                {"series": 'kadapt_job_restart_count{namespace="team-a",job_name="llm"}', "values": "0x10 1x20"},
            ],
            "alert_rule_test": [
                _alert("KadaptJobFailingRepeatedly", "15m", None),
                _alert("KadaptJobFailingRepeatedly", "25m", [{"severity": "warning", **a}]),
            ],
        },
        {   # a failed completion fires; a success does not
            "interval": "1m",
            "input_series": [
                {"series": 'kadapt_job_completions_total{namespace="team-a",result="failed"}', "values": "0x5 1x10"},
                {"series": 'kadapt_job_completions_total{namespace="team-b",result="succeeded"}', "values": "0x5 1x10"},
            ],
            "alert_rule_test": [
                _alert("KadaptJobFailed", "4m", None),
                _alert("KadaptJobFailed", "8m", [{"severity": "warning", "namespace": "team-a",
                                                  "result": "failed"}]),
            ],
        },
        {   # stuck while Running fires after 30m + 15m (not during start-up); moving or suspended jobs never do
            "interval": "1m",
            "input_series": [
                {"series": 'kadapt_job_progress_ratio{namespace="team-a",job_name="sst2"}', "values": "0.1x90"},
                {"series": 'kadapt_job_phase{namespace="team-a",job_name="sst2",phase="Running"}', "values": "1x90"},
                {"series": 'kadapt_job_progress_ratio{namespace="team-a",job_name="llm"}', "values": "0+0.01x90"},
                {"series": 'kadapt_job_phase{namespace="team-a",job_name="llm",phase="Running"}', "values": "1x90"},
                {"series": 'kadapt_job_progress_ratio{namespace="team-b",job_name="paused"}', "values": "0.5x90"},
                {"series": 'kadapt_job_phase{namespace="team-b",job_name="paused",phase="Running"}', "values": "0x90"},
            ],
            "alert_rule_test": [
                _alert("KadaptJobStalled", "40m", None),
                _alert("KadaptJobStalled", "50m", [{"severity": "warning", **a}]),
            ],
        },
        {   # 90% used fires; 50% and 100% (already suspended) do not
            "interval": "1m",
            "input_series": [
                {"series": 'kadapt_job_budget_used_ratio{namespace="team-a",job_name="sst2"}',
                 "values": "0.5x3 0.95x5"},
                {"series": 'kadapt_job_budget_used_ratio{namespace="team-a",job_name="llm"}', "values": "1x8"},
            ],
            "alert_rule_test": [
                _alert("KadaptJobBudgetNearlySpent", "2m", None),
                _alert("KadaptJobBudgetNearlySpent", "6m", [{"severity": "info", **a}]),
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": 'kadapt_operator_reconcile_errors_total{handler="poll"}', "values": "0+6x40"},
                {"series": 'kadapt_operator_reconcile_errors_total{handler="create"}', "values": "0x40"},
            ],
            "alert_rule_test": [
                _alert("KadaptOperatorReconcileErrors", "20m", None),
                _alert("KadaptOperatorReconcileErrors", "30m", [{"severity": "warning", "handler": "poll"}]),
            ],
        },
    ]
    assert b != a
    spec = tmp_path / "rules_test.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}))
    out = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the reference itself ---------------------------------------------------------------------


def test_reference_rows_are_well_formed(reference: dict[str, MetricRef]) -> None:
    for ref in reference.values():
        assert ref.type in ("counter", "gauge", "histogram"), ref
        assert (ref.type == "counter") == ref.name.endswith("_total"), f"{ref.name}: only counters end in _total"
        assert len(ref.meaning) > 15, ref
        assert not ref.labels & {"le", "quantile", "instance"}, ref


def test_readme_holds_the_reference() -> None:
    assert parse_reference((ROOT / "README.md").read_text(), require_section=True)


def test_every_alert_is_named_in_the_docs(rules: dict[str, Any]) -> None:
    text = (ROOT / "README.md").read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, rule["alert"]
