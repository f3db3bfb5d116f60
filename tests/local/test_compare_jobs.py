"""The pure parts of ``kadapt compare`` (issue 14, item 6): each strategy's job, and ``--cluster``'s
names, labels, spec check, status -> row, table and error lines, from fixtures (no cluster).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadapt_operator.compare_cli import (
    ClusterError,
    comparison_jobs,
    comparison_namespace,
    explain,
    row_of,
    settled,
    spec_differences,
)
from kadapt_operator.labels import LABEL_COMPARISON, LABEL_STRATEGY
from kadapt_operator.local.compare import (
    DEFAULT_PARTIAL_LAYERS,
    Comparison,
    compare_table,
    finish,
    show,
    strategy_document,
    strategy_job_name,
    strategy_manifest,
)
from kadapt_operator.local.runner import RunInvalid
from kadapt_operator.output import OutputFormat
from kadapt_operator.runtime.client import ApiError
from kadapt_operator.validation import load_jobs, validate_object
from tests.local.test_run_plots import assert_png
from tests.trainer.tiny import manifest

STRATEGIES = ["head-only", "lora", "partial", "full"]


def job_doc(name: str = "topics", **kw: Any) -> dict[str, Any]:
    """The manifest as ``kadapt compare`` reads it: validated, dumped with every default."""
    doc = manifest(name, "pvc://models/minilm", "pvc://data/topics.jsonl", **kw)
    doc["metadata"]["labels"] = {"team": "nlp"}
    return validate_object(doc).model_dump(mode="json", by_alias=True, exclude_none=True)


# -- names and each strategy's job -------------------------------------------------------------------
def test_job_names_are_the_manifest_name_and_the_strategy_within_63_characters() -> None:
    assert strategy_job_name("topics", "head-only", "job.yaml") == "topics-head-only"
    assert strategy_job_name("t" * 53, "head-only", "job.yaml") == "t" * 53 + "-head-only"
    with pytest.raises(RunInvalid) as caught:
        strategy_job_name("t" * 54, "head-only", "job.yaml")
    (error,) = caught.value.errors
    assert error.path == "metadata.name"
    assert "is 64 characters, over Kubernetes' 63; shorten metadata.name to at most 53" in error.message


def test_each_strategy_keeps_data_split_and_seed_and_drops_the_other_strategies_settings() -> None:
    base = job_doc(extra_spec={"strategy": {"type": "auto", "lora": {"rank": 4}, "partial": {"trainableLayers": 1}}})
    docs = {s: strategy_document(base, s, "job.yaml") for s in STRATEGIES}
    for strategy, (doc, notes) in docs.items():
        assert doc["metadata"]["name"] == f"topics-{strategy}"
        assert doc["spec"]["output"]["uri"] == f"pvc://models/topics-{strategy}"
        assert doc["spec"]["dataset"] == base["spec"]["dataset"] and doc["spec"]["training"] == base["spec"]["training"]
        assert notes == []
        validate_object(doc)  # the API accepts every one
    assert docs["lora"][0]["spec"]["strategy"] == {"type": "lora", "lora": base["spec"]["strategy"]["lora"]}
    assert docs["partial"][0]["spec"]["strategy"] == {"type": "partial", "partial": base["spec"]["strategy"]["partial"]}
    assert docs["full"][0]["spec"]["strategy"] == {"type": "full"}
    assert base["spec"]["strategy"]["type"] == "auto"  # the manifest itself is left alone


def test_partial_without_settings_trains_the_default_top_blocks_and_says_so() -> None:
    doc, notes = strategy_document(job_doc(strategy="lora"), "partial", "job.yaml")
    assert doc["spec"]["strategy"] == {"type": "partial", "partial": {"trainableLayers": DEFAULT_PARTIAL_LAYERS}}
    assert notes and "spec.strategy.partial is not set in job.yaml" in notes[0]
    validate_object(doc)


def test_local_compare_writes_a_valid_partial_job_from_a_manifest_without_partial_settings(tmp_path: Path) -> None:
    # Before: strategy_manifest only switched the type, and the partial job was invalid.
    source = tmp_path / "job.yaml"
    source.write_text(yaml.safe_dump(manifest("cmp", "models/bert", "data.jsonl")))
    written, notes = strategy_manifest(source, "partial", tmp_path / "partial")
    (job,) = load_jobs(written)
    assert job.spec.strategy.partial is not None and job.spec.strategy.partial.trainable_layers == 2
    assert job.metadata.name == "cmp-partial" and len(notes) == 1


def test_cluster_jobs_carry_the_comparison_labels_and_the_namespace() -> None:
    jobs, notes = comparison_jobs(job_doc(), STRATEGIES, "team-a", "job.yaml")
    assert [j["metadata"]["name"] for j in jobs] == [f"topics-{s}" for s in STRATEGIES]
    for job, strategy in zip(jobs, STRATEGIES, strict=True):
        assert job["metadata"]["namespace"] == "team-a"
        assert job["metadata"]["labels"] == {"team": "nlp", LABEL_COMPARISON: "topics", LABEL_STRATEGY: strategy}
        assert job["spec"]["strategy"]["type"] == strategy
        assert job["spec"]["training"]["seed"] == 42 and job["spec"]["dataset"]["validationSplit"] == 0.2
    assert len(notes) == 1  # partial's default blocks


def test_a_cluster_job_too_long_for_its_pods_names_the_job() -> None:
    # 52 + "-head-only" = 62 characters: a valid name, but pod 1's hostname "<name>-1" is 64.
    with pytest.raises(RunInvalid) as caught:
        comparison_jobs(job_doc("t" * 52, workers=2), ["head-only"], "default", "job.yaml")
    (error,) = caught.value.errors
    assert error.path == "metadata.name" and f"in the head-only job {'t' * 52}-head-only" in error.message


def test_namespace_is_the_flag_else_the_manifest_else_the_context() -> None:
    assert comparison_namespace("a", None, "c", "job.yaml") == "a"
    assert comparison_namespace(None, "b", "c", "job.yaml") == "b"
    assert comparison_namespace("b", "b", None, "job.yaml") == "b"
    assert comparison_namespace(None, None, "c", "job.yaml") == "c"
    assert comparison_namespace(None, None, None, "job.yaml") == "default"
    with pytest.raises(ClusterError, match=r"metadata\.namespace is 'b' but --namespace is 'a'; drop one"):
        comparison_namespace("a", "b", None, "job.yaml")


def test_an_existing_job_matches_despite_server_defaults_and_budget_changes() -> None:
    (wanted,), _ = comparison_jobs(job_doc(), ["full"], "default", "job.yaml")
    sparse = manifest("topics", "pvc://models/minilm", "pvc://data/topics.jsonl", output="pvc://models/topics-full")
    assert spec_differences(sparse["spec"], wanted["spec"]) == []  # the defaults are the API's own
    assert spec_differences({**wanted["spec"], "budget": {"maxCost": 5}}, wanted["spec"]) == []
    other = json.loads(json.dumps(wanted["spec"]))
    other["training"]["seed"] = 7
    other["model"]["uri"] = "pvc://models/other"
    assert spec_differences(other, wanted["spec"]) == ["spec.model", "spec.training"]
    assert spec_differences({"model": "nonsense"}, wanted["spec"]) == ["spec"]


# -- status -> rows -> table, JSON and chart, for all four strategies ---------------------------------
def succeeded(trainable: int, accuracy: float, f1: float, gpu_seconds: float, cost: float) -> dict[str, Any]:
    return {
        "metadata": {"name": "x"},
        "status": {
            "phase": "Succeeded",
            "strategy": {"resolved": None},
            "parameters": {"trainable": trainable, "total": 22_700_000, "percent": 1.0},
            "cost": {"gpuSeconds": gpu_seconds, "costSoFar": cost, "currency": "EUR", "pricePerGPUHour": 3.6},
            "startTime": "2026-12-01T05:00:00Z",
            "completionTime": "2026-12-01T05:01:40Z",
            "output": {"uri": "pvc://m", "metrics": {"accuracy": accuracy, "macro_f1": f1, "eval_loss": 0.3}},
        },
    }


def statuses() -> dict[str, dict[str, Any]]:
    failed = {
        "metadata": {"name": "topics-partial"},
        "status": {
            "phase": "Failed",
            "parameters": {"trainable": 7_000_000, "total": 22_700_000},
            "cost": {"gpuSeconds": 30.0, "costSoFar": 0.03},
            "startTime": "2026-12-01T05:00:00Z",
            "completionTime": "2026-12-01T05:00:30Z",
            "conditions": [
                {"type": "Running", "status": "False", "reason": "Failed"},
                {"type": "Failed", "status": "True", "reason": "BadInput", "message": "label 'x' unknown"},
            ],
        },
    }
    return {
        "head-only": succeeded(1_925, 0.96, 0.955, 100.0, 0.1),
        "lora": succeeded(150_000, 0.95, 0.949, 400.0, 0.4),
        "partial": failed,
        "full": succeeded(22_700_000, 0.965, 0.96, 1000.0, 1.0),
    }


def test_rows_from_status_carry_the_operators_figures() -> None:
    rows = {s: row_of(s, obj) for s, obj in statuses().items()}
    head = rows["head-only"]
    assert (head.status, head.trainable_params, head.total_params) == ("succeeded", 1_925, 22_700_000)
    assert (head.accuracy, head.macro_f1, head.gpu_seconds, head.cost) == (0.96, 0.955, 100.0, 0.1)
    assert head.wall_seconds == 100.0 and head.reason is None and head.run_dir is None
    partial = rows["partial"]
    assert partial.status == "failed" and partial.reason == "BadInput: label 'x' unknown"
    assert partial.accuracy is None and partial.cost == 0.03 and partial.job == "topics-partial"
    resolved = succeeded(5, 0.9, 0.9, 1.0, 0.01)
    resolved["status"]["strategy"]["resolved"] = "head-only"
    assert row_of("auto", resolved).strategy == "head-only"  # auto shows what it chose, as locally
    running = row_of("full", {"status": {"phase": "Running"}}, waiting="not finished after --timeout 60s")
    assert running.status == "running" and running.reason == "not finished after --timeout 60s"
    assert running.accuracy is None


def test_table_json_and_chart_of_four_strategies_from_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    rows = [row_of(s, obj) for s, obj in statuses().items()]
    result = finish(Comparison("topics", "EUR", rows, str(tmp_path / "compare.json"), namespace="team-a"))
    marked = {r.strategy: (r.best_value, r.recommended) for r in result.rows}
    # head-only: 9.6 accuracy per EUR, best; full is the most accurate, head-only the cheapest within a point.
    assert marked == {
        "head-only": (True, True),
        "lora": (False, False),
        "partial": (False, False),
        "full": (False, False),
    }
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert doc["recommended"] == doc["bestValue"] == "head-only" and doc["namespace"] == "team-a"
    assert [r["strategy"] for r in doc["strategies"]] == STRATEGIES
    assert doc["strategies"][2]["reason"] == "BadInput: label 'x' unknown"
    assert_png(tmp_path / "compare.png")

    assert show(result, OutputFormat.TEXT) == 1  # a strategy failed
    text = capsys.readouterr().out
    assert "partial (failed)" in text and "BadInput: label 'x' unknown" in text
    assert "best per cost, recommended" in text and "cost (EUR)" in text
    assert "0.9650" in text and "22,700,000" in text
    assert compare_table(result).row_count == 4


def test_a_job_is_settled_when_failed_or_succeeded_with_its_final_figures() -> None:
    assert settled({"status": {"phase": "Failed"}}, evaluates=True)
    assert not settled({"status": {"phase": "Running"}}, evaluates=True)
    assert not settled({"status": {"phase": "Succeeded", "output": {"metrics": {}}}}, evaluates=True)
    assert settled({"status": {"phase": "Succeeded", "output": {"metrics": {"accuracy": 1.0}}}}, evaluates=True)
    assert settled({"status": {"phase": "Succeeded"}}, evaluates=False)


# -- API errors -> one line with the fix -------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ApiError(0, "Connection refused"), "cannot reach the Kubernetes API server at https://k:6443"),
        (ApiError(401, "Unauthorized", "Unauthorized"), "rejected the credentials (Unauthorized); log in again"),
        (ApiError(403, "cannot create", "Forbidden"), "--clusterrole=edit --user=YOU -n team-a"),
        (ApiError(404, 'namespaces "team-a" not found', "NotFound"), "kubectl create namespace team-a"),
        (ApiError(422, "spec.x: Invalid", "Invalid"), "creating: HTTP 422 Invalid: spec.x: Invalid"),
    ],
)
def test_api_errors_are_one_line_naming_the_fix(error: ApiError, expected: str) -> None:
    line = explain(error, "creating", "https://k:6443", "team-a")
    assert expected in line and "\n" not in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--namespace", "team-a"], "--namespace only with --cluster"),
        (["--timeout", "60"], "--timeout only with --cluster"),
        (["--cluster", "--workers", "2"], "--workers only without --cluster;"),
    ],
)
def test_options_of_the_other_mode_are_refused_before_anything_runs(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from kadapt_operator.cli import app

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(manifest("cmp", "models/bert", "data.jsonl")))
    done = CliRunner().invoke(app, ["compare", str(job), *args])
    assert done.exit_code == 2
    assert expected in " ".join(done.output.split()), done.output
    assert not (tmp_path / "kadapt-runs").exists()


# -- the user's login: kubeconfig, --context and the context's namespace -------------------------------
def test_login_takes_the_chosen_contexts_server_and_namespace(tmp_path: Path) -> None:
    from kadapt_operator.runtime.login import KubeconfigError, user_configuration

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [
                    {"name": "dev", "cluster": {"server": "https://dev.example:6443"}},
                    {"name": "gpu", "cluster": {"server": "https://gpu.example:6443"}},
                ],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "dev", "context": {"cluster": "dev", "user": "me"}},
                    {"name": "gpu", "context": {"cluster": "gpu", "user": "me", "namespace": "team-nlp"}},
                ],
            }
        )
    )
    cfg, namespace = user_configuration(kubeconfig, None)
    assert (cfg.host, namespace) == ("https://dev.example:6443", None)  # the current context names none
    cfg, namespace = user_configuration(kubeconfig, "gpu")
    assert (cfg.host, namespace) == ("https://gpu.example:6443", "team-nlp")
    with pytest.raises(KubeconfigError, match="kubectl config get-contexts"):
        user_configuration(kubeconfig, "prod")
