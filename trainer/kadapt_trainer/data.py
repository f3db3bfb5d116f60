"""Datasets: jsonl, csv, parquet or a saved HF dataset folder, tokenised once up front.

Every check here runs before the model is loaded, so that bad data fails in seconds with
one line naming the field and the fix.
"""

from __future__ import annotations

import json
import math
import random
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
    """Raw examples of one split."""

    texts: list[str]
    labels: list[Any] | None = None


@dataclass
class TextData:
    """Train and validation examples plus the label mapping (classification)."""

    train: Records
    validation: Records | None
    label_names: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        """Classes of a classification task (0 for causal-lm)."""
        return len(self.label_names)

    def label2id(self) -> dict[str, int]:
        """The mapping recorded in the saved model's config."""
        return {name: i for i, name in enumerate(self.label_names)}


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


def _read_table(path: Path, fmt: DatasetFormat, field_name: str, split: str | None) -> dict[str, list[Any]]:
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
                        return {}
                    chosen = loaded[next(iter(loaded))]
                loaded = chosen
            return {name: list(loaded[name]) for name in loaded.column_names}
        if fmt == DatasetFormat.JSONL:
            # The json module, not pandas: jsonl is the common case and pandas costs ~60 MiB per rank.
            return _read_jsonl(path, field_name)
        import pandas as pd

        frame = pd.read_csv(path) if fmt == DatasetFormat.CSV else pd.read_parquet(path)
    except BadInputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{field_name}: cannot read {path} as {fmt}: {first}") from exc
    return {str(col): frame[col].tolist() for col in frame.columns}


def _read_jsonl(path: Path, field_name: str) -> dict[str, list[Any]]:
    """Columns of a JSON-lines file; a key missing from a row reads as None."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise BadInputError(f"{field_name}: line {number} of {path} is not a JSON object")
            rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return {str(col): [row.get(col) for row in rows] for col in columns}


def _records(columns: dict[str, list[Any]], spec: DatasetSpec, task: Task, path: Path, field_name: str) -> Records:
    """Pick the text (and label) columns, naming the available ones when a field is wrong."""
    available = ", ".join(sorted(columns)) or "(none)"
    if not columns or not any(len(v) for v in columns.values()):
        raise BadInputError(f"{field_name}: {path} has no rows; add examples or point to the right file")
    if spec.text_field not in columns:
        raise BadInputError(
            f"dataset.textField {spec.text_field!r} is not a column of {path}; available columns: {available}"
        )
    texts = ["" if t is None else str(t) for t in columns[spec.text_field]]
    labels = None
    if task == Task.SEQUENCE_CLASSIFICATION:
        if spec.label_field not in columns:
            raise BadInputError(
                f"dataset.labelField {spec.label_field!r} is not a column of {path}; available columns: {available}"
            )
        labels = list(columns[spec.label_field])
        keep = [i for i, lab in enumerate(labels) if not _missing(lab)]
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep]
    if not texts:
        raise BadInputError(f"{field_name}: {path} has no usable rows; add examples or point to the right file")
    return Records(texts=texts, labels=labels)


def _missing(value: Any) -> bool:
    """None and NaN (pandas' empty cell) are missing labels."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _label_key(value: Any) -> tuple[int, Any]:
    """Sort numbers numerically and everything else as text."""
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value))


def load_text_data(cfg: TrainerConfig, env: dict[str, str] | None = None) -> TextData:
    """Read, split and check the dataset.

    Raises:
        BadInputError: missing file, wrong field, no rows or a single class.
    """
    spec = cfg.dataset
    path = resolve_uri(spec.uri, env)
    fmt = infer_format(spec, path, "dataset.uri")
    train = _records(_read_table(path, fmt, "dataset.uri", "train"), spec, cfg.task, path, "dataset.uri")
    validation: Records | None = None
    if spec.validation_uri:
        vpath = resolve_uri(spec.validation_uri, env)
        vfmt = infer_format(spec, vpath, "dataset.validationUri")
        validation = _records(
            _read_table(vpath, vfmt, "dataset.validationUri", "validation"),
            spec,
            cfg.task,
            vpath,
            "dataset.validationUri",
        )
    elif fmt == DatasetFormat.HF_DISK:
        columns = _read_table(path, fmt, "dataset.uri", "validation")
        if columns and "train" in _split_names(path):
            validation = _records(columns, spec, cfg.task, path, "dataset.uri")
    if validation is None and spec.validation_split > 0 and len(train.texts) >= 2:
        order = list(range(len(train.texts)))
        random.Random(cfg.training.seed).shuffle(order)
        n_val = min(len(order) - 1, max(1, math.ceil(len(order) * spec.validation_split)))
        val_idx, train_idx = order[:n_val], order[n_val:]
        validation = Records(
            texts=[train.texts[i] for i in val_idx],
            labels=None if train.labels is None else [train.labels[i] for i in val_idx],
        )
        train = Records(
            texts=[train.texts[i] for i in train_idx],
            labels=None if train.labels is None else [train.labels[i] for i in train_idx],
        )
    label_names: list[str] = []
    if cfg.task == Task.SEQUENCE_CLASSIFICATION:
        assert train.labels is not None
        values = set(train.labels) | set(validation.labels or [] if validation else [])
        if len(values) < 2:
            only = next(iter(values)) if values else None
            raise BadInputError(
                f"dataset.labelField {spec.label_field!r} has only one class ({only!r}) in {path}; "
                "sequence-classification needs at least 2 classes (wrong labelField, or filtered data?)"
            )
        label_names = [str(v) for v in sorted(values, key=_label_key)]
    return TextData(train=train, validation=validation, label_names=label_names)


def _split_names(path: Path) -> list[str]:
    """Split names of a saved DatasetDict folder (empty for a single Dataset)."""
    import json

    dict_file = path / "dataset_dict.json"
    if not dict_file.exists():
        return []
    return list(json.loads(dict_file.read_text()).get("splits", []))


@dataclass
class Encoded:
    """Token ids (unpadded) and targets of one split."""

    input_ids: list[list[int]]
    labels: list[int] | None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(records: Records, tokenizer: Any, data: TextData, max_length: int) -> Encoded:
    """Tokenise once, up front; label values become class ids."""
    out = tokenizer(records.texts, truncation=True, max_length=max_length, add_special_tokens=True)
    ids = [list(x) for x in out["input_ids"]]
    labels = None
    if records.labels is not None:
        mapping = data.label2id()
        labels = [mapping[str(v)] for v in records.labels]
    return Encoded(input_ids=ids, labels=labels)


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
