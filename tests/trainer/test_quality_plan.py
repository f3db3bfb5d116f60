"""``kadapt plan``: the estimator's arithmetic, the CLI, and its estimate against a real run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kadapt_trainer.config import TrainingSpec
from kadapt_trainer.planning import Hardware, Workload, estimate, flops_per_token, model_shape
from tests.trainer import tiny
from tests.trainer.conftest import ROOT, trainer_env

W = Workload(
    total_params=110_000_000,
    embedding_params=23_000_000,
    layers=12,
    train_examples=1000,
    validation_examples=100,
    tokens_per_example=64,
)
HW = Hardware(processes=1, gpus_per_process=1, flops_per_second=1e13, price_per_gpu_hour=3.6)


def test_flops_per_strategy_follow_the_transformer_count() -> None:
    n = 1000
    assert flops_per_token("full", n, 0, 12) == 6 * n
    assert flops_per_token("lora", n, 0, 12) == 4 * n
    assert flops_per_token("partial", n, 3, 12) == 2 * n + 4 * n * 3 / 12
    assert flops_per_token("head-only", n, 0, 12) == 2 * n


def test_estimate_steps_cost_and_budget() -> None:
    training = TrainingSpec(epochs=3, global_batch_size=32, micro_batch_size=8)
    full = estimate("full", W, HW, training, "sequence-classification")
    assert full.steps == 3 * 32  # ceil(1000 / 32) = 32 steps per epoch
    n = W.compute_params
    # 3 passes of 6N per training token, an evaluation per epoch, and the LP-FT probe's forward pass
    assert full.flops == pytest.approx(6 * n * 1000 * 64 * 3 + 2 * n * 100 * 64 * 3 + 2 * n * 1100 * 64)
    no_probe = estimate("full", W, HW, training.model_copy(update={"lp_ft": False}), "sequence-classification")
    assert no_probe.flops == pytest.approx(full.flops - 2 * n * 1100 * 64)
    assert full.cost == pytest.approx(full.gpu_seconds / 3600 * 3.6) and full.fits_budget
    head = estimate("head-only", W, HW, training, "sequence-classification")
    assert head.steps == 1 and head.flops == pytest.approx(2 * n * 1100 * 64)
    assert head.seconds < full.seconds and head.trainable_params < full.trainable_params == W.total_params
    lora = estimate("lora", W, HW, training, "sequence-classification")
    partial = estimate("partial", W, HW, training, "sequence-classification", trainable_layers=4)
    assert head.flops < partial.flops < lora.flops < full.flops
    tight = estimate("full", W, HW, training, "sequence-classification", max_cost=full.cost / 2)
    assert not tight.fits_budget and "budget.maxCost" in (tight.budget_reason or "")
    hours = estimate("full", W, HW, training, "sequence-classification", max_gpu_hours=1e-9)
    assert not hours.fits_budget and "budget.maxGPUHours" in (hours.budget_reason or "")
    capped = estimate("full", W, HW, TrainingSpec(max_steps=10), "sequence-classification")
    assert capped.steps == 10


def _manifest(tmp: Path, model: Path, strategy: str, budget: dict[str, Any] | None = None) -> Path:
    train = tiny.write_jsonl(tmp / "train.jsonl", tiny.classification_rows(96, seed=1))
    val = tiny.write_jsonl(tmp / "val.jsonl", tiny.classification_rows(24, seed=2))
    spec: dict[str, Any] = {
        "model": {"uri": str(model)},
        "task": "sequence-classification",
        "dataset": {"uri": str(train), "validationUri": str(val), "maxLength": 32},
        "strategy": {"type": strategy},
        "training": {"epochs": 3, "globalBatchSize": 16, "microBatchSize": 4, "earlyStopping": {"enabled": False}},
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "output": {"uri": str(tmp / "out")},
    }
    if budget:
        spec["budget"] = budget
    doc = {"apiVersion": "kadapt.dev/v1alpha1", "kind": "AdaptationJob", "metadata": {"name": "plan-me"}, "spec": spec}
    path = tmp / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _plan(args: list[str]) -> tuple[int, dict[str, Any] | str]:
    from kadapt_operator.cli import app

    result = CliRunner().invoke(app, ["plan", *args])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout + str(result.exception or "")


def test_plan_cli_json_and_budget_exit_code(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    manifest = _manifest(tmp_path, tiny_models["bert"], "full")
    code, doc = _plan([str(manifest), "--local", "-o", "json"])
    assert code == 0 and isinstance(doc, dict), doc
    assert doc["workload"]["trainExamples"] == 96 and doc["workload"]["validationExamples"] == 24
    assert doc["workload"]["parameters"] == model_shape(tiny_models["bert"])["params"]
    assert [e["strategy"] for e in doc["strategies"]] == ["head-only", "lora", "partial", "full"]
    full = doc["strategies"][-1]
    assert full["steps"] == 3 * 6 and full["fits_budget"] and doc["fits"]
    # a budget below the projected GPU-hours: the configured strategy does not fit -> exit 1
    over = _manifest(tmp_path, tiny_models["bert"], "full", {"maxGPUHours": 1e-6})
    code, doc = _plan([str(over), "--local", "-o", "json"])
    assert code == 1 and isinstance(doc, dict) and not doc["fits"]
    assert "maxGPUHours" in doc["strategies"][-1]["budget_reason"]
    code, text = _plan([str(over), "--local"])
    assert code == 1 and "fits budget" in str(text)


@pytest.mark.slow
def test_plan_is_within_2x_of_a_real_run(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """The estimate against the wall time of the same tiny job's trainer process on this machine."""
    manifest = _manifest(tmp_path, tiny_models["bert"], "full")
    code, doc = _plan([str(manifest), "--local", "-o", "json"])
    assert code == 0 and isinstance(doc, dict), doc
    predicted = doc["strategies"][-1]["seconds"]
    spec = yaml.safe_load(manifest.read_text())["spec"]
    spec.pop("resources")
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"name": "full", "config": spec}]))
    results = tmp_path / "results.json"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/trainer/driver.py"), str(cases), str(results)],
        cwd=ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    actual = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.read_text())["full"]["report"]
    assert report["step"] == doc["strategies"][-1]["steps"]
    ratio = predicted / actual
    print(f"plan {predicted:.1f}s vs real {actual:.1f}s: ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0, (predicted, actual)
