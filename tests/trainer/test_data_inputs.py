"""The data loader: one canonical label form, counted drops, file line numbers, BOMs, length limits.

Each test is a kind of input people report against fine-tuning stacks; before these fixes
they gave a doubled label set, a late KeyError, "line 1 column 21", a refused BOM, NaN
losses from empty rows, or a tensor-size crash inside the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kadapt_trainer.config import TrainerConfig
from kadapt_trainer.data import (
    DROP_EMPTY_TEXT,
    DROP_MISSING_LABEL,
    DROP_NO_TARGET_TOKENS,
    canonical_label,
    encode,
    input_report,
    load_text_data,
)
from kadapt_trainer.errors import BadInputError
from kadapt_trainer.modeling import load_tokenizer, position_limit
from tests.trainer import tiny


def _cfg(tmp: Path, train: Path, val: Path | None = None, **dataset: Any) -> TrainerConfig:
    spec: dict[str, Any] = {"uri": str(train), **dataset}
    if val is not None:
        spec["validationUri"] = str(val)
    return TrainerConfig.model_validate(
        {"model": {"uri": str(tmp / "m")}, "dataset": spec, "strategy": {"type": "full"}, "output": {"uri": str(tmp)}}
    )


def _jsonl(path: Path, rows: list[Any], bom: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


ROWS: list[dict[str, Any]] = [
    {"text": f"the cat {w}", "label": lab} for w, lab in [("alpha", 1), ("beta", 2), ("gamma", 3)] * 4
]


# --- item 4: labels ---------------------------------------------------------------------


def test_string_and_int_labels_across_files_are_one_class_each(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    val = _jsonl(tmp_path / "val.jsonl", [{**r, "label": str(r["label"])} for r in ROWS[:6]])
    data = load_text_data(_cfg(tmp_path, train, val))
    assert data.label_names == ["1", "2", "3"]  # not 6 classes
    assert data.validation is not None and set(data.validation.labels or []) == {"1", "2", "3"}
    assert any("merged" in note and "'1'" in note for note in data.train.notes)


def test_int_and_float_labels_in_one_file_are_one_class(tmp_path: Path) -> None:
    rows = [{**r, "label": float(r["label"]) if i % 2 else r["label"]} for i, r in enumerate(ROWS)]
    data = load_text_data(_cfg(tmp_path, _jsonl(tmp_path / "d.jsonl", rows), validationSplit=0.25))
    assert data.label_names == ["1", "2", "3"]
    for records in (data.train, data.validation):
        assert records is not None and set(records.labels or []) <= {"1", "2", "3"}


def test_csv_and_jsonl_give_the_same_classes(tmp_path: Path) -> None:
    csv = tmp_path / "val.csv"
    csv.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}.0\n" for r in ROWS[:6]))
    data = load_text_data(_cfg(tmp_path, _jsonl(tmp_path / "t.jsonl", ROWS), csv))
    assert data.label_names == ["1", "2", "3"]


def test_labels_of_different_kinds_are_refused_naming_both_and_where(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    val = _jsonl(tmp_path / "val.jsonl", [{"text": "the dog", "label": "positive"}, *ROWS[:3]])
    with pytest.raises(BadInputError) as err:
        load_text_data(_cfg(tmp_path, train, val))
    msg = str(err.value)
    assert "1 (" in msg and f"{train} line 1" in msg
    assert "'positive'" in msg and f"{val} line 1" in msg
    assert "dataset.labelField 'label'" in msg


def test_validation_class_never_seen_in_training_is_an_error(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    val = _jsonl(tmp_path / "val.jsonl", [*ROWS[:3], {"text": "the dog", "label": 7}])
    with pytest.raises(BadInputError, match=rf"{val} line 4: the class 7 never occurs in the training data"):
        load_text_data(_cfg(tmp_path, train, val))


def test_split_keeps_every_class_in_training(tmp_path: Path) -> None:
    rows = [*ROWS, {"text": "rare delta", "label": 9}]
    data = load_text_data(_cfg(tmp_path, _jsonl(tmp_path / "d.jsonl", rows), validationSplit=0.5))
    assert "9" in (data.train.labels or [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, "1"), (1.0, "1"), ("1", "1"), (" 1 ", "1"), ("1.0", "1"), (True, "true"), ("True", "true"), (" x ", "x")],
)
def test_canonical_label(value: Any, expected: str) -> None:
    label = canonical_label(value, "label", "f.jsonl", "line 1")
    assert label is not None and label.canonical == expected


@pytest.mark.parametrize("value", [0.5, float("inf"), "2.5", [1], {"a": 1}])
def test_values_that_are_not_classes_are_refused_with_their_place(value: Any) -> None:
    with pytest.raises(BadInputError, match=r"dataset\.labelField 'label': f\.jsonl line 3: "):
        canonical_label(value, "label", "f.jsonl", "line 3")


@pytest.mark.parametrize("value", [None, float("nan"), "", "   "])
def test_missing_labels(value: Any) -> None:
    assert canonical_label(value, "label", "f.jsonl", "line 1") is None


# --- item 5: blank rows are dropped and counted ------------------------------------------


def test_empty_text_and_missing_label_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = [*ROWS, {"text": "", "label": 1}, {"text": "  \t ", "label": 2}, {"text": None, "label": 2}]
    rows += [{"text": "the mat", "label": None}, {"text": "the mat"}]
    data = load_text_data(_cfg(tmp_path, _jsonl(tmp_path / "d.jsonl", rows), validationSplit=0.25))
    assert data.dropped == {DROP_EMPTY_TEXT: 3, DROP_MISSING_LABEL: 2}
    assert data.validation is not None
    assert len(data.train.texts) + len(data.validation.texts) == len(ROWS)
    assert all(t.strip() for t in data.train.texts + data.validation.texts)


def test_causal_lm_rows_without_a_target_token_are_dropped_and_reported(tmp_path: Path) -> None:
    model = tiny.make_model(tmp_path / "gpt2", "gpt2", layers=1)
    tok = load_tokenizer(model)
    rows = [{"text": "the cat runs on the mat"}] * 6 + [{"text": "cat"}, {"text": "   "}]
    cfg = TrainerConfig.model_validate(
        {
            "model": {"uri": str(model)},
            "task": "causal-lm",
            "dataset": {"uri": str(_jsonl(tmp_path / "lm.jsonl", rows)), "validationSplit": 0},
            "strategy": {"type": "full"},
            "output": {"uri": str(tmp_path)},
        }
    )
    data = load_text_data(cfg)
    enc = encode(data.train, tok, data, 32, cfg.task)
    assert len(enc) == 6 and all(len(ids) >= 2 for ids in enc.input_ids)
    report = input_report(enc, None)
    assert report.dropped_rows == {DROP_EMPTY_TEXT: 1, DROP_NO_TARGET_TOKENS: 1}
    assert report.fields()["dropped_rows"] == report.dropped_rows
    assert report.lines()[0] == "kadapt: dropped 2 rows: 1 empty text, 1 no target tokens"


def test_no_usable_rows_names_the_reasons(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": " ", "label": 1}, {"text": "x", "label": None}])
    with pytest.raises(BadInputError, match=r"no usable rows \(1 empty text, 1 missing label\)"):
        load_text_data(_cfg(tmp_path, path))


# --- item 7: maxLength beyond the model ---------------------------------------------------


def test_max_length_is_clamped_to_the_position_limit_with_a_warning(tmp_path: Path) -> None:
    model = tiny.make_model(tmp_path / "bert", "bert", layers=1)  # 64 positions
    assert position_limit(model) == 64
    tok = load_tokenizer(model)
    long_row = {"text": " ".join(["cat"] * 500), "label": "x"}
    path = _jsonl(tmp_path / "d.jsonl", [long_row, {"text": "dog", "label": "y"}] * 3)
    cfg = _cfg(tmp_path, path, validationSplit=0, maxLength=1024)
    data = load_text_data(cfg)
    enc = encode(data.train, tok, data, cfg.dataset.max_length, cfg.task)
    assert max(len(ids) for ids in enc.input_ids) == 64
    report = input_report(enc)
    assert report.warnings == [
        "dataset.maxLength 1024 is beyond the model's limit of 64 positions; texts are truncated to 64 tokens"
    ]
    assert "kadapt: warning: dataset.maxLength 1024" in report.lines()[0]


def test_roberta_positions_exclude_the_padding_offset(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1})
    )
    assert position_limit(tmp_path) == 512


# --- item 8: file diagnostics -----------------------------------------------------------


def test_malformed_jsonl_reports_the_files_own_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in ROWS] + ["", '{"text": "the cat", "label": 1,}']
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=rf"dataset\.uri: {path} line 14: not valid JSON \(.* at column 32\)"):
        load_text_data(_cfg(tmp_path, path))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_utf8_bom_is_accepted(tmp_path: Path, fmt: str) -> None:
    if fmt == "jsonl":
        path = _jsonl(tmp_path / "d.jsonl", ROWS, bom=True)
    else:
        path = tmp_path / "d.csv"
        path.write_bytes(
            b"\xef\xbb\xbf" + ("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS)).encode()
        )
    data = load_text_data(_cfg(tmp_path, path, validationSplit=0))
    assert len(data.train.texts) == len(ROWS) and data.label_names == ["1", "2", "3"]


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS[:4]) + "a,b,c\n")
    with pytest.raises(BadInputError, match=rf"{path} line 6: 3 fields but the header has 2"):
        load_text_data(_cfg(tmp_path, path))


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a", "label": 1}\n{"text": "caf\xe9", "label": 2}\n')
    with pytest.raises(BadInputError, match=rf"{path} line 2: not UTF-8"):
        load_text_data(_cfg(tmp_path, path))


def test_split_that_would_take_a_class_out_of_training_keeps_all_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "the cat", "label": 0}, {"text": "the dog", "label": 1}])
    data = load_text_data(_cfg(tmp_path, path, validationSplit=0.5))
    assert data.validation is None and len(data.train.texts) == 2
    assert any("training without validation" in note for note in data.train.notes)
