"""Property: any small dataset ends in a clean training set with counted drops, or a bad-input
error naming the file, the line and the field; never a traceback, never a NaN loss.

Random datasets mix label types (ints, integral and fractional floats, numeric strings,
names, booleans, missing), empty and whitespace texts, very long texts and odd Unicode
(combining marks, right-to-left, emoji, zero-width, lone surrogates), written as JSONL or
CSV, with or without a UTF-8 BOM, with or without a separate validation file, for
classification and causal-lm. ``BadInputError`` is what ``python -m kadapt_trainer`` turns
into exit 2 with one line (tests/trainer/test_bad_input.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kadapt_trainer.config import Task, TrainerConfig
from kadapt_trainer.data import collate, encode, input_report, load_text_data
from kadapt_trainer.errors import BadInputError
from kadapt_trainer.modeling import load_tokenizer
from tests.trainer import tiny

MAX_LENGTH = 16
ODD = ["e\u0301", "\u05e9\u05dc\u05d5\u05dd", "\U0001f600", "\u200b", "\u00a0", "\ufeff", "\x00", "\ud800", "\u2028"]
TEXTS = st.one_of(
    st.sampled_from(["", " ", "\t\n", "   \u3000"]),
    st.lists(st.sampled_from(tiny.WORDS + tiny.KEYWORDS), min_size=1, max_size=6).map(" ".join),
    st.lists(st.sampled_from(tiny.WORDS), min_size=300, max_size=600).map(" ".join),  # very long
    st.lists(st.sampled_from(ODD + tiny.WORDS), min_size=1, max_size=4).map(" ".join),
    st.text(max_size=12),
)
LABELS = st.one_of(
    st.integers(0, 3),
    st.sampled_from([0.0, 1.0, 2.0, 0.5, float("inf")]),
    st.sampled_from(["0", "1", " 2 ", "1.0", "2.5"]),
    st.sampled_from([*tiny.KEYWORDS, " alpha ", "Beta"]),
    st.booleans(),
    st.none(),
)
PATHS = re.compile(r"/\S+\.(jsonl|csv)")
ROWS = st.lists(st.tuples(TEXTS, LABELS), min_size=1, max_size=14)


def _write(path: Path, rows: list[tuple[str, Any]], fmt: str, bom: bool, ascii_json: bool) -> Path:
    if fmt == "jsonl":
        text = "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=ascii_json) + "\n" for t, lab in rows)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["text", "label"])
        writer.writerows([(t, "" if lab is None else lab) for t, lab in rows])
        text = buf.getvalue()
    data = text.encode("utf-8", "surrogatepass")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path.with_suffix(path.suffix)


@pytest.fixture(scope="module")
def tokenizers(tiny_models: dict[str, Path]) -> dict[str, Any]:
    return {arch: load_tokenizer(tiny_models[arch]) for arch in ("bert", "gpt2")}


@pytest.fixture(scope="module")
def models(tiny_models: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {
        "bert": AutoModelForSequenceClassification.from_pretrained(str(tiny_models["bert"]), num_labels=8).eval(),
        "gpt2": AutoModelForCausalLM.from_pretrained(str(tiny_models["gpt2"])).eval(),
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    train_rows=ROWS,
    val_rows=st.one_of(st.none(), ROWS),
    fmt=st.sampled_from(["jsonl", "csv"]),
    bom=st.booleans(),
    ascii_json=st.booleans(),
    causal=st.booleans(),
)
def test_loader_ends_clean_or_names_file_line_and_field(
    tmp_path_factory: pytest.TempPathFactory,
    tokenizers: dict[str, Any],
    models: dict[str, Any],
    train_rows: list[tuple[str, Any]],
    val_rows: list[tuple[str, Any]] | None,
    fmt: str,
    bom: bool,
    ascii_json: bool,
    causal: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    train = _write(tmp / f"train.{fmt}", train_rows, fmt, bom, ascii_json)
    dataset: dict[str, Any] = {"uri": str(train), "maxLength": MAX_LENGTH, "validationSplit": 0.25}
    files = [train]
    if val_rows is not None:
        val = _write(tmp / f"val.{fmt}", val_rows, fmt, bom, ascii_json)
        dataset["validationUri"] = str(val)
        files.append(val)
    task = Task.CAUSAL_LM if causal else Task.SEQUENCE_CLASSIFICATION
    cfg = TrainerConfig.model_validate(
        {"model": {"uri": str(tmp)}, "task": task, "dataset": dataset, "strategy": {"type": "full"},
         "output": {"uri": str(tmp / "out")}}
    )  # fmt: skip
    arch = "gpt2" if causal else "bert"
    try:
        data = load_text_data(cfg)
        enc_train = encode(data.train, tokenizers[arch], data, MAX_LENGTH, task)
        enc_val = encode(data.validation, tokenizers[arch], data, MAX_LENGTH, task) if data.validation else None
    except BadInputError as exc:
        msg = str(exc)
        kind = PATHS.sub("FILE", msg).split(";")[0]
        event("refused: " + re.sub(r"\d+", "N", kind)[:60])
        assert "\n" not in msg, "one line"
        assert "dataset." in msg, f"names no field: {msg}"
        assert any(str(f) in msg for f in files), f"names no file: {msg}"
        row_level = ("line " in msg) or any(
            k in msg for k in ("only one class", "no usable rows", "no rows", "no row of", "labels of different")
        )
        assert row_level, f"names no line: {msg}"
        return
    event("clean")
    total = len(train_rows) + (len(val_rows) if val_rows is not None else 0)
    report = input_report(enc_train, enc_val)
    kept = len(enc_train) + (len(enc_val) if enc_val is not None else 0)
    assert kept + sum(report.dropped_rows.values()) == total, (kept, report.dropped_rows, total)
    texts = data.train.texts + (data.validation.texts if data.validation else [])
    assert all(t.strip() for t in texts), "a blank text was kept"
    minimum = 2 if causal else 1
    for enc in (enc_train, enc_val):
        if enc is None:
            continue
        assert all(minimum <= len(ids) <= MAX_LENGTH for ids in enc.input_ids)
        if not causal:
            assert enc.labels is not None and all(0 <= y < data.num_labels for y in enc.labels)
            assert len(set(data.label_names)) == data.num_labels >= 2
        batch = collate(enc, list(range(min(len(enc), 8))), int(tokenizers[arch].pad_token_id), task)
        with torch.no_grad():
            loss = models[arch](**batch).loss
        assert math.isfinite(float(loss)), f"NaN/inf loss on a clean batch: {batch}"
