"""Models and data for the trainer benchmark, built in code so that runs are reproducible offline.

* a BERT-style model of a few million parameters (random weights) with its own word-level
  tokenizer, saved with ``save_pretrained`` so that kadapt loads it from a path exactly as a
  user's model;
* a synthetic, learnable 4-class task on it: fixed-length sentences of random words, the
  class given by keywords planted in them (every text is the same number of tokens, so
  dynamic padding cannot make one loop's batches cheaper than another's);
* a small topic-classification set for all-MiniLM-L6-v2, built from the quickstart's
  sentence patterns (``examples/data/make_topics.py``) with the *patterns* split between train
  and test, so the test measures meaning rather than memorised templates.
"""

from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOPICS_SCRIPT = ROOT / "examples" / "data" / "make_topics.py"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NUM_CLASSES = 4
KEYWORDS_PER_CLASS = 8
#: Keywords planted per sentence; the class is the group they come from.
PLANTED = 3


@dataclass(frozen=True)
class BertShape:
    """Size of the generated BERT-style model."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    vocab_words: int = 1000
    max_positions: int = 128


def _words(n: int) -> list[str]:
    return [f"w{i}" for i in range(n)]


def build_bert(out: Path, shape: BertShape, seed: int = 0) -> Path:
    """Save a randomly initialised BertForSequenceClassification and its tokenizer to ``out``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(seed)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _words(shape.vocab_words))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
        pad_token_id=0,
    )
    config.num_labels = NUM_CLASSES
    model = BertForSequenceClassification(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "kadapt-bench-shape.json").write_text(json.dumps(asdict(shape)))
    return out


def synthetic_rows(n: int, words_per_text: int, vocab_words: int, seed: int) -> list[dict[str, str]]:
    """``n`` texts of exactly ``words_per_text`` in-vocabulary words; label = planted keyword group."""
    rng = random.Random(seed)
    keywords = _words(NUM_CLASSES * KEYWORDS_PER_CLASS)
    filler = _words(vocab_words)[len(keywords) :]
    rows = []
    for i in range(n):
        label = i % NUM_CLASSES
        words = [rng.choice(filler) for _ in range(words_per_text)]
        group = keywords[label * KEYWORDS_PER_CLASS : (label + 1) * KEYWORDS_PER_CLASS]
        for pos in rng.sample(range(words_per_text), PLANTED):
            words[pos] = rng.choice(group)
        rows.append({"text": " ".join(words), "label": f"class{label}"})
    rng.shuffle(rows)
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    """One JSON object per line, the layout kadapt reads by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a jsonl file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _topics_spec() -> dict[str, dict[str, list[str]]]:
    """The quickstart's sentence patterns and fillers (one source for both)."""
    spec = importlib.util.spec_from_file_location("kadapt_example_topics", TOPICS_SCRIPT)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{TOPICS_SCRIPT} is missing; the MiniLM benchmark builds its data from it")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    topics: dict[str, dict[str, list[str]]] = module.TOPICS
    return topics


def topic_split(per_pattern: int = 8, seed: int = 11) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, test): every third sentence pattern of each topic is held out for test.

    With 12 patterns a topic and ``per_pattern`` fillings each, that is 8 x per_pattern train
    and 4 x per_pattern test sentences per topic (256 / 128 for the default of 8).
    """
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    for topic, spec in _topics_spec().items():
        slots = {k: v for k, v in spec.items() if k != "patterns"}
        for p_index, pattern in enumerate(spec["patterns"]):
            seen: set[str] = set()
            tries = 0
            while len(seen) < per_pattern and tries < 50 * per_pattern:
                tries += 1
                text = pattern.format(**{k: rng.choice(v) for k, v in slots.items()})
                text = text[0].upper() + text[1:]
                if text in seen:
                    continue
                seen.add(text)
                (test if p_index % 3 == 2 else train).append({"text": text, "label": topic})
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test
