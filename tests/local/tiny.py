"""A tiny BERT-style model, its word-level tokenizer and learnable data, built in code (no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

WORDS = ["the", "a", "cat", "dog", "runs", "sits", "on", "mat", "red", "blue", "big", "small", "house", "tree"]
#: The class of a sentence is the keyword it contains: learnable in a few dozen steps.
KEYWORDS = ["alpha", "beta", "gamma"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def make_bert(folder: Path, layers: int = 2, hidden: int = 32) -> Path:
    """Save a randomly initialised tiny BertModel and its fast tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS + KEYWORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        pad_token_id=vocab["[PAD]"],
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


def keyword_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Short sentences labelled by the keyword they repeat."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = KEYWORDS[i % len(KEYWORDS)]
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))] + [label, label]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def manifest(
    name: str,
    model: Path | str,
    dataset: Path | str,
    *,
    strategy: str = "full",
    workers: int = 1,
    epochs: int = 2,
    global_batch: int = 8,
    micro_batch: int = 4,
    checkpoint_every: int | None = None,
    output: str | None = None,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdaptationJob for the tiny model (CPU: one process per worker unless overridden)."""
    spec: dict[str, Any] = {
        "model": {"uri": str(model)},
        "task": "sequence-classification",
        "dataset": {"uri": str(dataset), "validationSplit": 0.2, "maxLength": 16},
        "strategy": {"type": strategy},
        "training": {
            "epochs": epochs,
            "globalBatchSize": global_batch,
            "microBatchSize": micro_batch,
            "learningRate": 0.003,
            "earlyStopping": {"enabled": False},
        },
        "resources": {"workers": workers, "gpusPerWorker": 1, "cpu": "1", "memory": "2Gi"},
        "output": {"uri": output or f"pvc://models/{name}"},
    }
    if checkpoint_every:
        spec["checkpoint"] = {"everySteps": checkpoint_every}
    spec.update(extra_spec or {})
    return {"apiVersion": "kadapt.dev/v1alpha1", "kind": "AdaptationJob", "metadata": {"name": name}, "spec": spec}
