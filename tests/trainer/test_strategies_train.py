"""Every strategy trains a tiny model end to end: one process and a 2-process gloo gang.

Each gang runs many jobs (strategies x ZeRO stages x architectures) in one launch, because
starting DeepSpeed costs seconds per process. Per job the tests check: the loss went down,
the parameter counts are exactly the strategy's, and the saved output reloads with
``from_pretrained`` / ``PeftModel.from_pretrained`` and predicts what the trainer measured.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer import tiny
from tests.trainer.conftest import HERE, ROOT, trainer_env

pytestmark = pytest.mark.slow

CLS, LM = "sequence-classification", "causal-lm"
LORA_RANK = 4
EARLY = "w1-early-stopping"
PARTIAL_LAYERS = 1

# (arch, task, strategy, zero stage): one process
SINGLE = [
    ("bert", CLS, "head-only", 0),
    ("gpt2", CLS, "head-only", 2),
    ("bert", CLS, "partial", 0),
    ("llama", CLS, "partial", 2),
    ("gpt2", CLS, "full", 0),
    ("bert", CLS, "full", 2),
    ("llama", CLS, "full", 3),
    ("llama", CLS, "lora", 0),
    ("gpt2", CLS, "lora", 2),
    ("bert", CLS, "lora", 3),
    ("gpt2", LM, "head-only", 0),
    ("llama", LM, "lora", 2),
    ("bert", CLS, "auto", 0),
]
# two processes under torchrun (gloo)
GANG = [
    ("llama", CLS, "head-only", 0),
    ("bert", CLS, "head-only", 2),
    ("gpt2", CLS, "partial", 0),
    ("bert", CLS, "partial", 2),
    ("llama", CLS, "full", 0),
    ("gpt2", CLS, "full", 2),
    ("bert", CLS, "full", 3),
    ("bert", CLS, "lora", 0),
    ("llama", CLS, "lora", 2),
    ("gpt2", CLS, "lora", 3),
    ("gpt2", LM, "full", 3),
]


def case_name(world: int, arch: str, task: str, strategy: str, zero: int) -> str:
    return f"w{world}-{arch}-{'cls' if task == CLS else 'lm'}-{strategy}-z{zero}"


def job_config(
    tmp: Path, models: dict[str, Path], data: dict[str, Path], arch: str, task: str, strategy: str, zero: int
) -> dict[str, Any]:
    kind = "cls" if task == CLS else "lm"
    spec: dict[str, Any] = {"type": strategy}
    if strategy == "partial":
        spec["partial"] = {"trainableLayers": PARTIAL_LAYERS}
    if strategy == "lora":
        spec["lora"] = {"rank": LORA_RANK, "alpha": 8, "dropout": 0.0}
    return {
        "model": {"uri": str(models[arch])},
        "task": task,
        "dataset": {"uri": str(data[f"{kind}-train"]), "validationUri": str(data[f"{kind}-val"]), "maxLength": 32},
        "strategy": spec,
        "training": {
            "epochs": 3,
            "globalBatchSize": 16,
            "microBatchSize": 4,
            "learningRate": 2e-2 if strategy == "lora" else 3e-3,  # adapters start at zero: a higher rate
            "headLearningRate": 6e-2,
            "warmupRatio": 0.0,
            "lpFt": False,  # fine-tuning from a random head, so the loss has far to fall
            "earlyStopping": {"enabled": False},
        },
        "deepspeed": {"zeroStage": zero},
        "output": {"uri": str(tmp / "out"), "mergeAdapter": strategy == "lora"},
    }


def _run_matrix(tmp: Path, models: dict[str, Path], data: dict[str, Path], world: int) -> dict[str, Any]:
    matrix = SINGLE if world == 1 else GANG
    cases = []
    for arch, task, strategy, zero in matrix:
        name = case_name(world, arch, task, strategy, zero)
        cases.append({"name": name, "config": job_config(tmp / name, models, data, arch, task, strategy, zero)})
    if world == 1:  # early stopping on accuracy, which cannot beat 1.0 once reached
        # partial (head-only classification is solved in one step by the probe, see probe.py)
        early = job_config(tmp / EARLY, models, data, "gpt2", CLS, "partial", 0)
        early["training"].update(
            epochs=40, lpFt=True, earlyStopping={"enabled": True, "patience": 2, "metric": "accuracy"}
        )
        cases.append({"name": EARLY, "config": early})
    cases_file, results_file = tmp / "cases.json", tmp / "results.json"
    cases_file.write_text(json.dumps(cases))
    driver = [str(HERE / "driver.py"), str(cases_file), str(results_file)]
    if world == 1:
        cmd = [sys.executable, *driver]
    else:
        from kadapt_trainer.ports import free_port

        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *driver,
        ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=trainer_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results: dict[str, Any] = json.loads(results_file.read_text())
    for case in cases:
        results[case["name"]]["tmp"] = str(tmp / case["name"])
    return results


@pytest.fixture(scope="module")
def single_results(tmp_path_factory: pytest.TempPathFactory, tiny_models: Any, tiny_data: Any) -> dict[str, Any]:
    return _run_matrix(tmp_path_factory.mktemp("single"), tiny_models, tiny_data, 1)


@pytest.fixture(scope="module")
def gang_results(tmp_path_factory: pytest.TempPathFactory, tiny_models: Any, tiny_data: Any) -> dict[str, Any]:
    return _run_matrix(tmp_path_factory.mktemp("gang"), tiny_models, tiny_data, 2)


def _head_numel(model: Any, arch: str, task: str) -> int:
    if task == LM:
        return model.lm_head.weight.numel()
    head = model.classifier if arch == "bert" else model.score
    return sum(p.numel() for p in head.parameters())


def _last_block(model: Any, arch: str) -> torch.nn.Module:
    return {"bert": lambda: model.bert.encoder.layer[-1], "gpt2": lambda: model.transformer.h[-1],
            "llama": lambda: model.model.layers[-1]}[arch]()  # fmt: skip


def _lora_numel(model: Any, arch: str) -> int:
    targets = {
        "bert": ("query", "key", "value"),
        "gpt2": ("c_attn",),
        "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    }
    total = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets[arch]:
            fan_in, fan_out = module.weight.shape if arch == "gpt2" else module.weight.shape[::-1]
            total += LORA_RANK * (fan_in + fan_out)
    return total


def _fresh_base(models: dict[str, Path], arch: str, task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == LM:
        return AutoModelForCausalLM.from_pretrained(str(models[arch]))
    return AutoModelForSequenceClassification.from_pretrained(
        str(models[arch]), num_labels=len(tiny.KEYWORDS), id2label=dict(enumerate(tiny.KEYWORDS))
    )


def expected_trainable(models: dict[str, Path], arch: str, task: str, strategy: str) -> int:
    """Trainable parameters of a strategy, computed from the model's structure directly."""
    model = _fresh_base(models, arch, task)
    if strategy == "full":
        return sum(p.numel() for p in model.parameters())
    if strategy == "lora":
        return _lora_numel(model, arch) + (_head_numel(model, arch, task) if task == CLS else 0)
    head = _head_numel(model, arch, task)
    if strategy == "partial":
        return head + sum(p.numel() for p in _last_block(model, arch).parameters())
    return head  # head-only, and auto on little data


def reload_and_score(
    out: Path, models: dict[str, Path], arch: str, task: str, lora: bool, merged: bool = False
) -> dict[str, float]:
    """Load the output as a user would and measure it on the validation file."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if merged:
        out = out / "merged"
    if lora and not merged:
        model = PeftModel.from_pretrained(_fresh_base(models, arch, task), str(out))
    elif task == LM:
        model = AutoModelForCausalLM.from_pretrained(str(out))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(out))
        assert model.config.id2label == dict(enumerate(tiny.KEYWORDS))
    tok = AutoTokenizer.from_pretrained(str(out))
    model.eval()
    return _score(model, tok, task)


VAL_ROWS: dict[str, list[dict[str, Any]]] = {}


def _score(model: Any, tok: Any, task: str) -> dict[str, float]:
    rows = VAL_ROWS["cls" if task == CLS else "lm"]
    texts = [r["text"] for r in rows]
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float()
    if task == CLS:
        labels = torch.tensor([tiny.KEYWORDS.index(r["label"]) for r in rows])
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return {"eval_loss": float(loss), "accuracy": float((logits.argmax(-1) == labels).float().mean())}
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    return {"eval_loss": float(loss), "perplexity": math.exp(float(loss))}


def _check(result: dict[str, Any], models: dict[str, Path], data: dict[str, Path], case: tuple[Any, ...]) -> None:
    arch, task, strategy, _zero = case
    assert "error" not in result, result.get("error")
    report = result["report"]
    losses = result["losses"]
    assert report["state"] == "succeeded"
    resolved = "head-only" if strategy == "auto" else strategy
    first = losses[0]
    if task == CLS and resolved == "head-only":  # solved by the probe (L-BFGS): one step reports it
        assert report["step"] == report["total_steps"] == len(losses) == 1
        assert first < 0.7 * math.log(len(tiny.KEYWORDS)) and report["probe"]["val_accuracy"] > 0.6
    else:
        assert report["step"] == report["total_steps"] == len(losses) == 18  # 3 epochs x ceil(96 / 16)
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        assert last < (0.7 if task == CLS else 0.93) * first, f"loss did not go down: {losses}"
    assert report["strategy"] == resolved
    if strategy == "auto":
        assert "head-only" in report["strategy_reason"]
    else:
        assert report["strategy_reason"] == "as configured in spec.strategy.type"
    assert report["trainable_params"] == expected_trainable(models, arch, task, resolved)
    assert report["total_params"] >= report["trainable_params"]
    for kind in ("cls", "lm"):
        VAL_ROWS.setdefault(kind, [json.loads(x) for x in data[f"{kind}-val"].read_text().splitlines()])
    out = Path(result["tmp"]) / "out"
    assert json.loads((out / "kadapt-result.json").read_text())["state"] == "succeeded"
    scored = reload_and_score(out, models, arch, task, lora=resolved == "lora")
    metrics = report["eval_metrics"]
    assert scored["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-3, abs=1e-4)
    if task == CLS:
        assert scored["accuracy"] == pytest.approx(metrics["accuracy"])
        assert scored["accuracy"] > 0.6, "the reloaded model predicts no better than chance"
    else:
        assert scored["perplexity"] < math.exp(first), "the reloaded LM is no better than the start"
    if resolved == "lora":  # the merged copy predicts what the adapter does
        merged = reload_and_score(out, models, arch, task, lora=True, merged=True)
        assert merged["eval_loss"] == pytest.approx(scored["eval_loss"], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("case", SINGLE, ids=[case_name(1, *c) for c in SINGLE])
def test_single_process(
    case: tuple[Any, ...], single_results: dict[str, Any], tiny_models: Any, tiny_data: Any
) -> None:
    _check(single_results[case_name(1, *case)], tiny_models, tiny_data, case)


@pytest.mark.parametrize("case", GANG, ids=[case_name(2, *c) for c in GANG])
def test_two_process_gang(
    case: tuple[Any, ...], gang_results: dict[str, Any], tiny_models: Any, tiny_data: Any
) -> None:
    _check(gang_results[case_name(2, *case)], tiny_models, tiny_data, case)


def test_early_stopping_keeps_the_best_model(single_results: dict[str, Any], tiny_models: Any, tiny_data: Any) -> None:
    result = single_results[EARLY]
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report["state"] == "succeeded" and report["message"] == "early stopped"
    assert report["step"] < report["total_steps"] == 40 * 6
    assert report["eval_metrics"]["accuracy"] == 1.0
    for kind in ("cls", "lm"):
        VAL_ROWS.setdefault(kind, [json.loads(x) for x in tiny_data[f"{kind}-val"].read_text().splitlines()])
    scored = reload_and_score(Path(result["tmp"]) / "out", tiny_models, "gpt2", CLS, lora=False)
    assert scored["eval_loss"] == pytest.approx(report["eval_metrics"]["eval_loss"], rel=1e-3, abs=1e-4)
    assert scored["accuracy"] == 1.0
