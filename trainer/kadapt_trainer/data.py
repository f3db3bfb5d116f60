"""Datasets: jsonl, csv, parquet or a saved HF dataset folder, tokenised once up front.

Every check here runs before the model is loaded, so that bad data fails in seconds with
one line naming the field and the fix.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import numbers
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kadapt_trainer.config import DatasetFormat, DatasetSpec, Task, TrainerConfig, resolve_uri
from kadapt_trainer.errors import BadInputError

#: Suffixes that name a format when ``dataset.format`` is omitted.
SUFFIX_FORMATS = {
    ".jsonl": DatasetFormat.JSONL,
    ".json": DatasetFormat.JSONL,
    ".csv": DatasetFormat.CSV,
    ".parquet": DatasetFormat.PARQUET,
    ".pq": DatasetFormat.PARQUET,
}
#: Split names looked up in a saved DatasetDict.
TRAIN_SPLITS = ("train",)
VALIDATION_SPLITS = ("validation", "valid", "val", "test")
#: Label value for positions the loss ignores.
IGNORE_INDEX = -100


@dataclass
class Records:
    """Raw examples of one split, each with the place it came from (for error messages).

    ``labels`` hold canonical label strings (see ``canonical_label``) once loaded;
    ``dropped`` counts the rows of this split's file left out, by reason (``DROP_*``);
    ``notes`` are warnings about it for the log and the result.
    """

    texts: list[str]
    labels: list[Any] | None = None
    origins: list[str] = field(default_factory=list)
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class TextData:
    """Train and validation examples plus the label mapping (classification).

    ``dropped`` counts the rows left out, by reason (``DROP_*``), over both splits;
    ``notes`` are warnings for the log and the result (e.g. labels merged from several forms).
    """

    train: Records
    validation: Records | None
    label_names: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        """Classes of a classification task (0 for causal-lm)."""
        return len(self.label_names)

    def label2id(self) -> dict[str, int]:
        """The mapping recorded in the saved model's config."""
        return {name: i for i, name in enumerate(self.label_names)}


#: Reasons a row is dropped (keys of ``TextData.dropped`` and of the result's ``dropped_rows``).
DROP_EMPTY_TEXT = "empty_text"
DROP_MISSING_LABEL = "missing_label"
DROP_NO_TOKENS = "no_tokens"
DROP_NO_TARGET_TOKENS = "no_target_tokens"


def infer_format(spec: DatasetSpec, path: Path, field_name: str) -> DatasetFormat:
    """The format from the spec, else from the file name."""
    if spec.format:
        return DatasetFormat(spec.format)
    if path.is_dir():
        return DatasetFormat.HF_DISK
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BadInputError(
            f"{field_name}: cannot tell the format of {path} from its suffix; "
            "set dataset.format to jsonl, csv, parquet or hf-disk"
        )
    return fmt


@dataclass
class Table:
    """Columns of one file as plain lists, plus where each row came from ("line 17", "row 3")."""

    columns: dict[str, list[Any]]
    origins: list[str]


def _read_table(path: Path, fmt: DatasetFormat, field_name: str, split: str | None) -> Table:
    """Columns of one file or saved dataset split, as plain lists."""
    if not path.exists():
        raise BadInputError(f"{field_name}: {path} does not exist; check the path and the volume it is on")
    if path.is_file() and path.stat().st_size == 0:
        raise BadInputError(f"{field_name}: {path} is empty (no rows); add examples or point to the right file")
    try:
        if fmt == DatasetFormat.HF_DISK:
            import datasets

            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                names = TRAIN_SPLITS if split == "train" else VALIDATION_SPLITS
                chosen = next((loaded[n] for n in names if n in loaded), None)
                if chosen is None:
                    if split != "train":
                        return Table({}, [])
                    chosen = loaded[next(iter(loaded))]
                loaded = chosen
            columns = {name: list(loaded[name]) for name in loaded.column_names}
            return Table(columns, _row_origins(columns))
        if fmt == DatasetFormat.JSONL:
            # The json module, not pandas: jsonl is the common case and pandas costs ~60 MiB per rank.
            return _read_jsonl(path, field_name)
        if fmt == DatasetFormat.CSV:
            # The csv module, not pandas: it knows each record's line number, and leaves values as
            # written (labels are normalised by canonical_label, not by pandas' type guessing).
            return _read_csv(path, field_name)
        import pandas as pd

        frame = pd.read_parquet(path)
    except BadInputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{field_name}: cannot read {path} as {fmt}: {first}") from exc
    columns = {str(col): frame[col].tolist() for col in frame.columns}
    return Table(columns, _row_origins(columns))


def _row_origins(columns: dict[str, list[Any]]) -> list[str]:
    """Origins "row N" (1-based) for formats without lines."""
    n = max((len(v) for v in columns.values()), default=0)
    return [f"row {i}" for i in range(1, n + 1)]


def _decode_line(raw: bytes, number: int, path: Path, field_name: str) -> str:
    """One line as text; a UTF-8 BOM at the start of the file is dropped."""
    if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{field_name}: {path} line {number}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
            "save the file as UTF-8"
        ) from exc


def _read_jsonl(path: Path, field_name: str) -> Table:
    """Columns of a JSON-lines file; a key missing from a row reads as None.

    Errors name the file's own line number (json.loads alone would say "line 1").
    """
    rows: list[dict[str, Any]] = []
    origins: list[str] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = _decode_line(raw, number, path, field_name)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(
                    f"{field_name}: {path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "each line must be one JSON object"
                ) from exc
            if not isinstance(row, dict):
                raise BadInputError(
                    f"{field_name}: {path} line {number}: is not a JSON object (got {type(row).__name__}); "
                    'each line must look like {"text": ..., "label": ...}'
                )
            rows.append(row)
            origins.append(f"line {number}")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return Table({str(col): [row.get(col) for row in rows] for col in columns}, origins)


def _read_csv(path: Path, field_name: str) -> Table:
    """Columns of a CSV file with a header row; an empty cell reads as None."""
    csv.field_size_limit(2**31 - 1)  # very long texts are truncated by the tokenizer, not refused here
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BadInputError(f"{field_name}: {path} line {line}: not UTF-8; save the file as UTF-8") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return Table({}, [])
        names = [h.strip() for h in header]
        columns: dict[str, list[Any]] = {name: [] for name in names}
        origins: list[str] = []
        start = reader.line_num + 1
        for record in reader:
            if not record:  # a blank line; a record of empty cells is a row (dropped and counted below)
                start = reader.line_num + 1
                continue
            if len(record) > len(names):
                raise BadInputError(
                    f"{field_name}: {path} line {start}: {len(record)} fields but the header has {len(names)}; "
                    "quote texts that contain commas"
                )
            for i, name in enumerate(names):
                columns[name].append(record[i] if i < len(record) and record[i] != "" else None)
            origins.append(f"line {start}")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise BadInputError(f"{field_name}: {path} line {reader.line_num}: {exc}") from exc
    return Table(columns, origins)


def _records(table: Table, spec: DatasetSpec, task: Task, path: Path, field_name: str) -> tuple[Records, Counter[str]]:
    """Pick the text (and label) columns; drop (and count) rows without text or label.

    Raises:
        BadInputError: a wrong field name, a text that is not text, or no usable row.
    """
    columns = table.columns
    available = ", ".join(sorted(columns)) or "(none)"
    if not columns or not any(len(v) for v in columns.values()):
        raise BadInputError(f"{field_name}: {path} has no rows; add examples or point to the right file")
    if spec.text_field not in columns:
        raise BadInputError(
            f"dataset.textField {spec.text_field!r} is not a column of {path}; available columns: {available}"
        )
    if task == Task.SEQUENCE_CLASSIFICATION and spec.label_field not in columns:
        raise BadInputError(
            f"dataset.labelField {spec.label_field!r} is not a column of {path}; available columns: {available}"
        )
    dropped: Counter[str] = Counter()
    out = Records(texts=[], labels=[] if task == Task.SEQUENCE_CLASSIFICATION else None, source=str(path))
    raw_labels = columns.get(spec.label_field, [])
    for i, value in enumerate(columns[spec.text_field]):
        where = table.origins[i]
        text = _text(value, spec.text_field, path, where)
        if not text.strip():
            dropped[DROP_EMPTY_TEXT] += 1
            continue
        if out.labels is not None:
            label = canonical_label(raw_labels[i], spec.label_field, path, where)
            if label is None:
                dropped[DROP_MISSING_LABEL] += 1
                continue
            out.labels.append(label)
        out.texts.append(text)
        out.origins.append(where)
    if not out.texts:
        reasons = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(dropped.items()))
        raise BadInputError(
            f"{field_name}: {path} has no usable rows ({reasons or 'none'}); add examples or point to the right file"
        )
    out.dropped = dict(dropped)
    return out, dropped


def _text(value: Any, field: str, path: Path, where: str) -> str:
    """The text of one row: strings as they are, numbers as written; anything else is refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict | list | tuple):
        raise BadInputError(
            f"dataset.textField {field!r}: {path} {where}: is a {type(value).__name__}, not text; "
            "point textField at a column of strings"
        )
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInputError(
            f"dataset.textField {field!r}: {path} {where}: is not valid Unicode "
            f"({exc.reason} at character {exc.start + 1}); fix the text"
        ) from exc
    return text


#: Label kinds: one kind per dataset (mixing them is almost always a wrong file or column).
KIND_NUMBER = "number"
KIND_BOOLEAN = "boolean"
KIND_NAME = "name"
_INTEGER = re.compile(r"[+-]?\d+(\.0*)?")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Label:
    """A label's canonical form, its kind, and how it was written (for messages)."""

    canonical: str
    kind: str
    written: str

    def __str__(self) -> str:
        return self.canonical


def canonical_label(value: Any, field: str, path: Path | str, where: str) -> Label | None:
    """One canonical form per class, whatever the file format wrote.

    ``1``, ``1.0``, ``"1"`` and ``" 1 "`` are the class ``1``; ``true`` and ``"True"`` the class
    ``true``; names are stripped. None, NaN and empty strings are missing (the row is dropped).

    Raises:
        BadInputError: fractional or infinite numbers, lists and objects: not classes.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return Label("true" if value else "false", KIND_BOOLEAN, repr(value))
    if isinstance(value, numbers.Integral):
        return Label(str(int(value)), KIND_NUMBER, repr(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isfinite(number) and number == int(number):
            return Label(str(int(number)), KIND_NUMBER, repr(value))
        raise BadInputError(
            f"dataset.labelField {field!r}: {path} {where}: {value!r} is not a class (a fractional or infinite "
            "number); sequence-classification needs class names or whole numbers"
        )
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _INTEGER.fullmatch(text):
            return Label(str(int(float(text))) if "." in text else str(int(text)), KIND_NUMBER, repr(value))
        if _DECIMAL.fullmatch(text):
            return canonical_label(float(text), field, path, where)
        if text.lower() in ("true", "false"):
            return Label(text.lower(), KIND_BOOLEAN, repr(value))
        return Label(text, KIND_NAME, repr(value))
    raise BadInputError(
        f"dataset.labelField {field!r}: {path} {where}: a {type(value).__name__} is not a class; "
        "each label must be a class name or a whole number"
    )


def _label_key(name: str) -> tuple[int, float, str]:
    """Sort whole numbers numerically and everything else as text."""
    try:
        return (0, float(int(name)), "")
    except ValueError:
        return (1, 0.0, name)


def _check_labels(train: Records, validation: Records | None, field: str) -> tuple[list[str], list[str]]:
    """The sorted class names, and notes about labels merged from several written forms.

    Raises:
        BadInputError: labels of different kinds (numbers and names), a validation class
            that never occurs in training, or a single class.
    """
    first: dict[str, tuple[Label, str]] = {}
    forms: dict[str, set[str]] = {}
    splits = [train] + ([validation] if validation is not None else [])
    for records in splits:
        assert records.labels is not None
        for label, where in zip(records.labels, records.origins, strict=True):
            assert isinstance(label, Label)
            first.setdefault(label.kind, (label, f"{records.source} {where}"))
            forms.setdefault(label.canonical, set()).add(label.written)
    if len(first) > 1:
        (a, a_where), (b, b_where) = list(first.values())[:2]
        raise BadInputError(
            f"dataset.labelField {field!r}: labels of different kinds: {a.written} ({a_where}) is a {a.kind} "
            f"but {b.written} ({b_where}) is a {b.kind}; write every label the same way in every file"
        )
    assert train.labels is not None
    seen = {label.canonical for label in train.labels}
    if validation is not None and validation.labels is not None:
        for label, where in zip(validation.labels, validation.origins, strict=True):
            if label.canonical not in seen:
                raise BadInputError(
                    f"dataset.labelField {field!r}: {validation.source} {where}: the class {label.written} never "
                    f"occurs in the training data ({train.source}); add training examples of it or remove it "
                    "from the validation data"
                )
    if len(seen) < 2:
        only = next(iter(seen)) if seen else None
        raise BadInputError(
            f"dataset.labelField {field!r} has only one class ({only!r}) in {train.source}; "
            "sequence-classification needs at least 2 classes (wrong labelField, or filtered data?)"
        )
    notes = [
        f"labels written in several forms were merged: {', '.join(sorted(written))} -> {name}"
        for name, written in sorted(forms.items())
        if len(written) > 1
    ]
    return sorted(seen, key=_label_key), notes


def _split(train: Records, share: float, seed: int) -> tuple[Records, Records | None]:
    """Hold out ``share`` of the training rows, keeping at least one training row of every class.

    None for the validation split when no row can be held out that way (every class once).
    """
    order = list(range(len(train.texts)))
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, math.ceil(len(order) * share)))
    if train.labels is None:
        val_idx, train_idx = order[:n_val], order[n_val:]
    else:
        left = Counter(str(label) for label in train.labels)
        val_idx, rest = [], []
        for i in order:
            name = str(train.labels[i])
            if len(val_idx) < n_val and left[name] > 1:
                val_idx.append(i)
                left[name] -= 1
            else:
                rest.append(i)
        train_idx = rest

    def take(idx: list[int], dropped: dict[str, int]) -> Records:
        return Records(
            texts=[train.texts[i] for i in idx],
            labels=None if train.labels is None else [train.labels[i] for i in idx],
            origins=[train.origins[i] for i in idx],
            source=train.source,
            dropped=dropped,
        )

    if not val_idx:
        kept = take(train_idx, train.dropped)
        kept.notes.append(
            "dataset.validationSplit: no row could be held out without taking a class out of training; "
            "training without validation (add examples or a validationUri)"
        )
        return kept, None
    return take(train_idx, train.dropped), take(val_idx, {})


def load_text_data(cfg: TrainerConfig, env: dict[str, str] | None = None) -> TextData:
    """Read, split and check the dataset, before the model is loaded.

    Rows with empty or whitespace-only text, or without a label, are dropped and counted
    (``TextData.dropped``); labels are normalised to one canonical form (``canonical_label``).

    Raises:
        BadInputError: missing file, unreadable row (named by file and line), wrong field,
            no usable rows, labels of mixed kinds, unseen validation classes or a single class.
    """
    spec = cfg.dataset
    path = resolve_uri(spec.uri, env)
    fmt = infer_format(spec, path, "dataset.uri")
    dropped: Counter[str] = Counter()
    train, counts = _records(_read_table(path, fmt, "dataset.uri", "train"), spec, cfg.task, path, "dataset.uri")
    dropped.update(counts)
    validation: Records | None = None
    if spec.validation_uri:
        vpath = resolve_uri(spec.validation_uri, env)
        vfmt = infer_format(spec, vpath, "dataset.validationUri")
        table = _read_table(vpath, vfmt, "dataset.validationUri", "validation")
        validation, counts = _records(table, spec, cfg.task, vpath, "dataset.validationUri")
        dropped.update(counts)
    elif fmt == DatasetFormat.HF_DISK:
        table = _read_table(path, fmt, "dataset.uri", "validation")
        if table.columns and "train" in _split_names(path):
            validation, counts = _records(table, spec, cfg.task, path, "dataset.uri")
            dropped.update(counts)
    if validation is None and spec.validation_split > 0 and len(train.texts) >= 2:
        train, validation = _split(train, spec.validation_split, cfg.training.seed)
    label_names: list[str] = []
    notes: list[str] = []
    if cfg.task == Task.SEQUENCE_CLASSIFICATION:
        label_names, notes = _check_labels(train, validation, spec.label_field)
        train.notes.extend(notes)
        train.labels = [str(label) for label in train.labels or []]
        if validation is not None:
            validation.labels = [str(label) for label in validation.labels or []]
    return TextData(train=train, validation=validation, label_names=label_names, dropped=dict(dropped), notes=notes)


def _split_names(path: Path) -> list[str]:
    """Split names of a saved DatasetDict folder (empty for a single Dataset)."""
    import json

    dict_file = path / "dataset_dict.json"
    if not dict_file.exists():
        return []
    return list(json.loads(dict_file.read_text()).get("splits", []))


@dataclass
class Encoded:
    """Token ids (unpadded) and targets of one split.

    ``dropped`` counts the split's rows left out, by reason, from reading to tokenising;
    ``notes`` are the warnings the log and the result carry (see ``input_report``).
    """

    input_ids: list[list[int]]
    labels: list[int] | None
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(records: Records, tokenizer: Any, data: TextData, max_length: int, task: Task | None = None) -> Encoded:
    """Tokenise once, up front; label values become class ids.

    Rows that tokenise to nothing are dropped and counted (a classifier has nothing to read;
    for causal-lm a row needs two tokens to have one target, else its micro-batch's mean
    loss is 0/0 = NaN). ``max_length`` beyond the model's position limit (which
    ``modeling.load_tokenizer`` records as ``tokenizer.model_max_length``) is clamped to it,
    with a note: longer inputs would crash inside the model's position embeddings.

    Raises:
        BadInputError: when no row of the split is left.
    """
    if not records.texts:
        raise BadInputError(f"dataset: {records.source or 'a split'} has no rows; add examples")
    notes = list(records.notes)
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < max_length:
        notes.append(
            f"dataset.maxLength {max_length} is beyond the model's limit of {limit} positions; "
            f"texts are truncated to {limit} tokens"
        )
        max_length = limit
    out = tokenizer(records.texts, truncation=True, max_length=max_length, add_special_tokens=True)
    causal = task == Task.CAUSAL_LM or (task is None and records.labels is None)
    minimum, reason = (2, DROP_NO_TARGET_TOKENS) if causal else (1, DROP_NO_TOKENS)
    keep = [i for i, ids in enumerate(out["input_ids"]) if len(ids) >= minimum]
    ids = [list(out["input_ids"][i]) for i in keep]
    dropped = Counter(records.dropped)
    dropped[reason] += len(records.texts) - len(keep)
    if not ids:
        need = "two tokens (one to predict the next)" if causal else "a token"
        raise BadInputError(
            f"dataset.textField: no row of {records.source or 'the data'} has {need} after tokenisation "
            f"({len(records.texts)} rows); check textField and the tokenizer"
        )
    labels = None
    if records.labels is not None:
        mapping = data.label2id()
        labels = [mapping[str(records.labels[i])] for i in keep]
    return Encoded(input_ids=ids, labels=labels, dropped={k: v for k, v in dropped.items() if v}, notes=notes)


@dataclass(frozen=True)
class InputReport:
    """What the data preparation left out or changed: for the log, ``/progress`` and the result."""

    dropped_rows: dict[str, int]
    warnings: list[str]

    def fields(self) -> dict[str, Any]:
        """``ProgressReport`` fields."""
        return {"dropped_rows": dict(self.dropped_rows), "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        """Log lines ("kadapt: dropped 3 rows: 2 empty text, 1 missing label")."""
        out = [f"kadapt: warning: {w}" for w in self.warnings]
        if self.dropped_rows:
            parts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.dropped_rows.items())
            out.insert(0, f"kadapt: dropped {sum(self.dropped_rows.values())} rows: {parts}")
        return out


def input_report(*encoded: Encoded | None) -> InputReport:
    """Rows dropped (by reason, over all splits) and warnings, deduplicated."""
    total: Counter[str] = Counter()
    warnings: list[str] = []
    for enc in encoded:
        if enc is not None:
            total.update(enc.dropped)
            warnings.extend(n for n in enc.notes if n not in warnings)
    return InputReport({k: v for k, v in sorted(total.items()) if v}, warnings)


def collate(encoded: Encoded, indices: list[int], pad_id: int, task: Task) -> dict[str, torch.Tensor]:
    """A right-padded batch; causal-lm labels are the inputs with padding ignored."""
    rows = [encoded.input_ids[i] for i in indices]
    width = max(1, max(len(r) for r in rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if task == Task.SEQUENCE_CLASSIFICATION:
        assert encoded.labels is not None
        batch["labels"] = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.long)
    else:
        labels = input_ids.clone()
        labels[mask == 0] = IGNORE_INDEX
        batch["labels"] = labels
    return batch


def epoch_order(n: int, seed: int, epoch: int, multiple: int) -> list[int]:
    """The shuffled example order of one epoch, wrapped to a whole number of global batches.

    Deterministic in (seed, epoch), so a resumed run sees exactly the batches it would have.
    """
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    short = (-len(order)) % multiple
    while short > 0:
        take = order[: min(short, n)]
        order.extend(take)
        short -= len(take)
    return order


def shard(indices: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's share of an evaluation set (strided, no padding)."""
    return indices[rank::world_size]
