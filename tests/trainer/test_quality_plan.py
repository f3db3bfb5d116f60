"""``kadapt plan``: the estimator's arithmetic, the CLI, and its estimate against a real run."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kadapt_trainer.config import TrainingSpec
from kadapt_trainer.planning import (
    ENGINE_INIT_SECONDS,
    Hardware,
    StepTimes,
    Workload,
    estimate,
    flops_per_token,
    model_shape,
)
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


STEPS = StepTimes(
    micro_batch_size=4,
    train={"full": 0.1, "partial": 0.04, "lora": 0.07},
    optimizer={"full": 0.05, "partial": 0.01, "lora": 0.002},
    checkpoint={"full": 0.3, "partial": 0.1, "lora": 0.05},
    forward=0.02,
    save=0.5,
    startup=5.0,
    imports=3.0,
)


def test_measured_step_times_count_every_micro_batch_evaluation_and_checkpoint() -> None:
    """With a calibration, the estimate counts what the trainer repeats, at the measured times."""
    w = Workload(
        1_000_000, 100_000, 2, train_examples=64, validation_examples=16, tokens_per_example=10, test_examples=8
    )
    hw = Hardware(1, 0, 1e9, 3.6, step_times=STEPS)
    training = TrainingSpec(epochs=2, global_batch_size=16, micro_batch_size=4)
    full = estimate("full", w, hw, training, "sequence-classification")
    assert full.steps == 8  # 4 steps per epoch, 2 epochs
    probe = 16 * 0.02 + 4 * 0.02  # LP-FT: the training and validation features, micro-batches of 4
    by_hand = (
        5.0 + ENGINE_INIT_SECONDS  # start-up, engine
        + 8 * (4 * 0.1 + 0.05)  # 8 steps of 4 micro-batches and one optimizer step
        + 3 * 4 * 0.02 + 2 * 0.02  # 2 epoch evaluations and the final one (validation), the test split
        + 2 * 0.3 + 0.5  # a checkpoint per evaluation, the final save
        + probe
    )  # fmt: skip
    assert full.seconds == pytest.approx(by_hand)
    no_probe = estimate("full", w, hw, training.model_copy(update={"lp_ft": False}), "sequence-classification")
    assert no_probe.seconds == pytest.approx(by_hand - probe)
    # a micro-batch twice the calibrated one takes twice as long; half as many of them run
    wide = estimate("full", w, hw, training.model_copy(update={"micro_batch_size": 8}), "sequence-classification")
    assert wide.seconds == pytest.approx(full.seconds)
    head = estimate("head-only", w, hw, training, "sequence-classification")
    assert head.seconds == pytest.approx(5.0 + probe + 2 * 0.02 + 0.5)  # no engine, no steps
    lora = estimate("lora", w, hw, training, "sequence-classification")
    assert lora.seconds < full.seconds and lora.gpu_seconds == pytest.approx(lora.seconds)
    assert StepTimes.from_dict(STEPS.as_dict()) == STEPS
    # a measured feature pass (length-sorted, wider no-grad batches) prices head-only and the probe per example
    featured = Hardware(1, 0, 1e9, 3.6, step_times=replace(STEPS, features=0.001))
    assert estimate("head-only", w, featured, training, "sequence-classification").seconds == pytest.approx(
        5.0 + (64 + 16 + 8) * 0.001 + 0.5
    )
    assert estimate("full", w, featured, training, "sequence-classification").seconds == pytest.approx(
        by_hand - probe + (64 + 16) * 0.001
    )


def test_a_forward_measured_rate_is_slowed_for_training_flops() -> None:
    """auto's probe measures a forward rate; training FLOPs are counted at a share of it."""
    training = TrainingSpec(epochs=1, global_batch_size=32, micro_batch_size=8, lp_ft=False)
    plain = estimate("full", W, HW, training, "sequence-classification")
    slowed = estimate(
        "full", W, Hardware(1, 1, 1e13, 3.6, training_rate_share=0.5), training, "sequence-classification"
    )
    train_flops = 6 * W.compute_params * W.train_examples * W.tokens_per_example
    assert slowed.seconds - plain.seconds == pytest.approx(train_flops / 1e13)
    head = estimate(
        "head-only", W, Hardware(1, 1, 1e13, 3.6, training_rate_share=0.5), training, "sequence-classification"
    )
    assert head.seconds == pytest.approx(estimate("head-only", W, HW, training, "sequence-classification").seconds)


def test_calibration_times_each_strategy_on_copies(tiny_models: dict[str, Path], tiny_data: dict[str, Path]) -> None:
    """The calibration measures every priced strategy and leaves the job's model as it was."""
    import torch

    from kadapt_trainer.calibrate import measure
    from kadapt_trainer.config import TrainerConfig
    from kadapt_trainer.data import encode, load_text_data
    from kadapt_trainer.modeling import load_model, load_tokenizer

    cfg = TrainerConfig.model_validate(
        {
            "jobName": "calibrate",
            "model": {"uri": str(tiny_models["bert"])},
            "dataset": {"uri": str(tiny_data["cls-train"]), "validationUri": str(tiny_data["cls-val"])},
            "training": {"microBatchSize": 4},
            "output": {"uri": "/tmp/unused"},
        }
    )
    data = load_text_data(cfg)
    tok = load_tokenizer(tiny_models["bert"])
    model = load_model(tiny_models["bert"], cfg.task, data.label_names, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = encode(data.train, tok, data, 32, cfg.task)
    times = measure(model, train, cfg, int(tok.pad_token_id), torch.device("cpu"), layers=2)
    assert set(times.train) == set(times.optimizer) == set(times.checkpoint) == {"full", "partial", "lora"}
    assert all(v > 0 for d in (times.train, times.optimizer, times.checkpoint) for v in d.values())
    assert times.forward > 0 and times.save > 0 and times.micro_batch_size == 4
    assert 0 < times.features < times.forward  # per example, against a micro-batch of 4
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())  # no strategy was applied to it


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


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _plan(args: list[str]) -> tuple[int, dict[str, Any] | str]:
    from kadapt_operator.cli import app

    result = CliRunner().invoke(app, ["plan", *args])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout + str(result.exception or "")


def test_plan_cli_json_and_budget_exit_code(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    manifest = _manifest(tmp_path, tiny_models["bert"], "full")
    code, doc = _plan([str(manifest), "--local", "--no-calibrate", "-o", "json"])
    assert code == 0 and isinstance(doc, dict), doc
    assert doc["hardware"]["stepTimes"] is None and "matmul" in doc["hardware"]["source"]
    assert doc["workload"]["trainExamples"] == 96 and doc["workload"]["validationExamples"] == 24
    assert doc["workload"]["parameters"] == model_shape(tiny_models["bert"])["params"]
    assert [e["strategy"] for e in doc["strategies"]] == ["head-only", "lora", "partial", "full"]
    full = doc["strategies"][-1]
    assert full["steps"] == 3 * 6 and full["fits_budget"] and doc["fits"]
    # a budget below the projected GPU-hours: the configured strategy does not fit -> exit 1
    over = _manifest(tmp_path, tiny_models["bert"], "full", {"maxGPUHours": 1e-6})
    code, doc = _plan([str(over), "--local", "--no-calibrate", "-o", "json"])
    assert code == 1 and isinstance(doc, dict) and not doc["fits"]
    assert "maxGPUHours" in doc["strategies"][-1]["budget_reason"]
    code, text = _plan([str(over), "--local", "--no-calibrate"])
    assert code == 1 and "fits budget" in str(text)


@pytest.mark.slow
def test_plan_is_within_2x_of_a_real_run(
    tmp_path: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate against the same tiny job's trainer process on this machine.

    The plan's calibration process runs with the trainer process's thread settings (one
    thread), as ``kadapt plan --local`` and ``kadapt run`` would from the same shell. Both
    sides are CPU seconds of the process (what the calibration measures), so other load on a
    shared machine moves neither; the wall time is printed beside them.
    """
    monkeypatch.setenv("OMP_NUM_THREADS", trainer_env()["OMP_NUM_THREADS"])
    manifest = _manifest(tmp_path, tiny_models["bert"], "full")
    code, doc = _plan([str(manifest), "--local", "-o", "json"])
    assert code == 0 and isinstance(doc, dict), doc
    assert doc["hardware"]["stepTimes"] is not None, doc["hardware"]["source"]  # measured, not modelled
    predicted = doc["strategies"][-1]["seconds"]
    spec = yaml.safe_load(manifest.read_text())["spec"]
    spec.pop("resources")
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"name": "full", "config": spec}]))
    results = tmp_path / "results.json"
    start, cpu = time.monotonic(), _children_cpu()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/trainer/driver.py"), str(cases), str(results)],
        cwd=ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall, actual = time.monotonic() - start, _children_cpu() - cpu
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.read_text())["full"]["report"]
    assert report["step"] == doc["strategies"][-1]["steps"]
    ratio = predicted / actual
    print(f"plan {predicted:.1f}s vs real {actual:.1f} CPU-s ({wall:.1f}s wall): ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0, (predicted, actual)
