"""LP-FT head initialisation, strategy defaults, and the recipe's report and baseline flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kadapt_trainer.config import StrategyType, TrainerConfig
from kadapt_trainer.data import encode, load_text_data
from kadapt_trainer.defaults import STRATEGY_DEFAULTS, resolve_training
from kadapt_trainer.dist import DistInfo
from kadapt_trainer.modeling import load_model, load_tokenizer
from kadapt_trainer.quality import choose
from kadapt_trainer.strategies import find_head
from tests.trainer import tiny
from tests.trainer.conftest import ROOT, trainer_env

ONE = DistInfo(rank=0, world_size=1, local_rank=0)


def _cfg(model: Path, data: dict[str, Path], strategy: str, **training: Any) -> TrainerConfig:
    return TrainerConfig.model_validate(
        {
            "model": {"uri": str(model)},
            "dataset": {"uri": str(data["cls-train"]), "validationUri": str(data["cls-val"]), "maxLength": 32},
            "strategy": {"type": strategy, **({"partial": {"trainableLayers": 1}} if strategy == "partial" else {})},
            "training": {"globalBatchSize": 16, "microBatchSize": 4, **training},
            "output": {"uri": "/tmp/unused"},
        }
    )


def _choose(cfg: TrainerConfig) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(choice, head before, head after) for a freshly loaded tiny model."""
    data = load_text_data(cfg)
    tok = load_tokenizer(Path(cfg.model.uri))
    torch.manual_seed(0)
    model = load_model(Path(cfg.model.uri), cfg.task, data.label_names, tok)
    train = encode(data.train, tok, data, 32, cfg.task)
    val = encode(data.validation, tok, data, 32, cfg.task) if data.validation else None
    head = find_head(model, cfg.task)[1]
    before = {k: v.clone() for k, v in head.state_dict().items()}
    choice = choose(cfg, ONE, data, model, train, val, int(tok.pad_token_id), torch.device("cpu"))
    return choice, before, {k: v.clone() for k, v in head.state_dict().items()}


@pytest.mark.parametrize("strategy", ["full", "partial", "lora"])
def test_lp_ft_starts_fine_tuning_from_the_probe(
    tiny_models: dict[str, Path], tiny_data: dict[str, Path], strategy: str
) -> None:
    choice, before, after = _choose(_cfg(tiny_models["bert"], tiny_data, strategy))
    assert choice.probe is not None and choice.training["lpFtStart"] is True
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the head moved to the probe's fit
    # the head now predicts what the probe measured: its validation accuracy, from the cached features
    head = torch.nn.Linear(after["weight"].shape[1], after["weight"].shape[0])
    head.load_state_dict(after)
    assert choice.probe.val_features is not None and choice.probe.val_labels is not None
    with torch.no_grad():
        acc = float((head(choice.probe.val_features).argmax(-1) == choice.probe.val_labels).float().mean())
    assert acc == pytest.approx(choice.probe.result.val_accuracy)
    assert acc > 0.5  # the keyword task is learnable from the frozen random backbone


def test_lp_ft_off_keeps_the_random_head(tiny_models: dict[str, Path], tiny_data: dict[str, Path]) -> None:
    choice, before, after = _choose(_cfg(tiny_models["bert"], tiny_data, "full", lpFt=False))
    assert choice.probe is None and "lpFtStart" not in choice.training
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_strategy_defaults_fill_only_what_is_unset(tiny_models: dict[str, Path], tiny_data: dict[str, Path]) -> None:
    choice, _, _ = _choose(_cfg(tiny_models["bert"], tiny_data, "lora", learningRate=1e-3))
    lora = STRATEGY_DEFAULTS[choice.spec.type]
    assert choice.cfg.training.learning_rate == 1e-3  # set by the user: kept
    assert choice.cfg.training.epochs == lora.epochs and choice.cfg.training.warmup_ratio == lora.warmup_ratio
    assert choice.cfg.training.head_learning_rate is None  # the engine's 20x of the resolved rate
    assert choice.training["headLearningRate"] == pytest.approx(20 * 1e-3)
    assert choice.training["defaulted"] == ["epochs", "warmupRatio"]
    # LoRA trains at a far higher rate than full fine-tuning by default
    full, _ = resolve_training(_cfg(tiny_models["bert"], tiny_data, "full").training, "full", "sequence-classification")
    lora_rate, _ = resolve_training(
        _cfg(tiny_models["bert"], tiny_data, "lora").training, "lora", "sequence-classification"
    )
    assert (lora_rate.learning_rate or 0) >= 5 * (full.learning_rate or 1)


def _run(tmp: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    cases_file, results_file = tmp / "cases.json", tmp / "results.json"
    cases_file.write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/trainer/driver.py"), str(cases_file), str(results_file)],
        cwd=ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict[str, Any] = json.loads(results_file.read_text())
    return results


@pytest.mark.slow
def test_recipe_reports_probe_defaults_evaluation_and_baseline(
    tmp_path: Path, tiny_models: dict[str, Path], tiny_data: dict[str, Path]
) -> None:
    good = _cfg(tiny_models["bert"], tiny_data, "head-only").model_dump(mode="json", by_alias=True)
    good["dataset"]["testUri"] = str(tiny_data["cls-val"])
    good["output"]["uri"] = str(tmp_path / "good")
    # every text the same: nothing to learn, the head can only answer the majority class
    flat = tmp_path / "flat"
    rows = [{"text": "the cat sits", "label": "alpha" if i % 3 else "beta"} for i in range(60)]
    bad = _cfg(tiny_models["bert"], tiny_data, "head-only").model_dump(mode="json", by_alias=True)
    bad["dataset"] = {
        "uri": str(tiny.write_jsonl(flat / "train.jsonl", rows)),
        "validationUri": str(tiny.write_jsonl(flat / "val.jsonl", rows[:30])),
    }
    bad["output"]["uri"] = str(tmp_path / "bad")
    results = _run(tmp_path, [{"name": "good", "config": good}, {"name": "bad", "config": bad}])

    rep = results["good"]["report"]
    assert rep["total_steps"] == 1 and rep["step"] == 1  # the probe solved the head; one step reports it
    assert rep["probe"]["c"] in [c["c"] for c in rep["probe"]["candidates"]] and rep["probe"]["regularization"] == "l2"
    assert rep["training"]["epochs"] == STRATEGY_DEFAULTS[StrategyType.HEAD_ONLY].epochs
    assert "epochs" in rep["training"]["defaulted"]
    val = rep["evaluation"]["validation"]
    assert val["accuracy"] == pytest.approx(rep["eval_metrics"]["accuracy"])
    assert sum(map(sum, val["confusion_matrix"])) == val["examples"] == 24
    assert rep["eval_metrics"]["macro_f1"] == pytest.approx(val["macro_f1"])
    assert rep["better_than_baseline"] is True and rep["evaluation"]["test"]["examples"] == 24
    saved = json.loads((tmp_path / "good" / "kadapt-result.json").read_text())
    assert saved["evaluation"]["validation"]["per_class"] == val["per_class"]

    rep = results["bad"]["report"]
    assert rep["better_than_baseline"] is False
    assert any("not better than always predicting" in w for w in rep["warnings"])
    base = rep["evaluation"]["validation"]["majority_baseline"]
    assert base["label"] == "alpha" and rep["eval_metrics"]["accuracy"] <= base["accuracy"]
