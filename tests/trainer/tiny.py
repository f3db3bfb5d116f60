"""The one factory of tiny models, tokenizers, data and manifests that every test builds in code.

No downloads: a word-level tokenizer over a toy vocabulary, randomly initialised BERT, GPT-2 and
Llama models of a few thousand parameters saved with ``save_pretrained`` (loaded by kadapt from
a path exactly as a user's model), learnable classification and causal-lm data, and an
``AdaptationJob`` manifest for them. Trainer, local-runner, metrics and end-to-end tests all
use this module.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "runs",
    "sits",
    "on",
    "under",
    "mat",
    "table",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "quickly",
    "slowly",
    "house",
    "tree",
    "river",
]
KEYWORDS = ["alpha", "beta", "gamma"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]
ARCHS = ("bert", "gpt2", "llama")


def make_tokenizer(folder: Path, arch: str) -> Any:
    """A WordLevel tokenizer over the toy vocabulary, saved as a fast HF tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS + KEYWORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if arch == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
        )
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")
    fast.save_pretrained(str(folder))
    return fast


def make_model(folder: Path, arch: str, layers: int = 2, dropout: float = 0.1) -> Path:
    """Save a randomly initialised tiny model (and its tokenizer) into ``folder``.

    ``dropout=0`` makes a forward pass independent of the random state, which tests that
    compare differently batched runs need.
    """
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder, arch)
    vocab = len(tok)
    torch.manual_seed(0)
    model: Any
    if arch == "bert":
        model = BertModel(
            BertConfig(
                vocab_size=vocab,
                hidden_size=32,
                num_hidden_layers=layers,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                pad_token_id=tok.pad_token_id,
                initializer_range=0.3,  # a random backbone whose CLS features still vary with the input
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            )
        )
    elif arch == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_embd=32,
                n_layer=layers,
                n_head=2,
                n_positions=64,
                pad_token_id=tok.pad_token_id,
                bos_token_id=tok.eos_token_id,
                eos_token_id=tok.eos_token_id,
                resid_pdrop=dropout,
                embd_pdrop=dropout,
                attn_pdrop=dropout,
                summary_first_dropout=dropout,
            )
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=32,
                num_hidden_layers=layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                bos_token_id=tok.eos_token_id,
                attention_dropout=dropout,
            )
        )
    model.save_pretrained(str(folder))
    return folder


def classification_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sentences whose class is the keyword they repeat and end with.

    Learnable even from a frozen random backbone (its features are dominated by the
    keyword), so every strategy, head-only included, must bring the loss down.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % len(KEYWORDS)
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))] + [KEYWORDS[label]] * 2
        rng.shuffle(words)
        words.append(KEYWORDS[label])
        rows.append({"text": " ".join(words), "label": KEYWORDS[label]})
    return rows


def lm_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sentences from a small cyclic grammar (each word predicts the next)."""
    rng = random.Random(seed)
    cycle = WORDS[:8]
    rows = []
    for _ in range(n):
        start = rng.randrange(len(cycle))
        length = rng.randint(6, 12)
        rows.append({"text": " ".join(cycle[(start + k) % len(cycle)] for k in range(length))})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One JSON object per line."""
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
    """An AdaptationJob for a tiny classification model (CPU: one process per worker unless overridden)."""
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
