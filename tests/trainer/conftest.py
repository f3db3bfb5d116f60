"""Fixtures of the trainer tests: tiny models and data built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.trainer import tiny

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny pretrained-style model per architecture (BERT, GPT-2, Llama)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: tiny.make_model(root / arch, arch) for arch in tiny.ARCHS}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Classification and LM data, each with a separate validation file."""
    root = tmp_path_factory.mktemp("tiny-data")
    return {
        "cls-train": tiny.write_jsonl(root / "cls-train.jsonl", tiny.classification_rows(96, seed=1)),
        "cls-val": tiny.write_jsonl(root / "cls-val.jsonl", tiny.classification_rows(24, seed=2)),
        "lm-train": tiny.write_jsonl(root / "lm-train.jsonl", tiny.lm_rows(96, seed=1)),
        "lm-val": tiny.write_jsonl(root / "lm-val.jsonl", tiny.lm_rows(24, seed=2)),
    }


def trainer_env(**extra: str) -> dict[str, str]:
    """Environment for a trainer subprocess: offline, importable, no launcher leftovers."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "trainer"), str(HERE), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["KADAPT_PROGRESS_PORT"] = "0"  # never the fixed default port in tests
    env.update(extra)
    return env
