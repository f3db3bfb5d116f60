"""Loading the pretrained model and tokenizer, with one-line errors for every bad path."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kadapt_trainer.config import ModelSpec, Task, resolve_uri
from kadapt_trainer.errors import BadInputError

#: Set by the hub client when there is no network; the trainer then fails fast on hf://.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Name of the pooled model's code file inside an output folder (see pooled.py).
POOLED_MODULE_FILE = "modeling_kadapt_pooled.py"
POOLED_CLASS = "PooledSequenceClassifier"


@dataclass(frozen=True)
class Pooling:
    """How a sentence-embedding backbone pools (from sentence-transformers' own config)."""

    mode: str
    normalize: bool


def is_offline(env: dict[str, str] | None = None) -> bool:
    """True when the hub client is told there is no network."""
    env = dict(os.environ) if env is None else env
    return any(env.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENV)


def resolve_model_path(spec: ModelSpec, env: dict[str, str] | None = None) -> Path:
    """The local folder of the model; hf:// is downloaded only when online.

    Raises:
        BadInputError: offline hf://, a missing path or a folder that is not a model.
    """
    env = dict(os.environ) if env is None else env
    if spec.uri.startswith("hf://"):
        repo = spec.uri[len("hf://") :]
        if is_offline(env):
            raise BadInputError(
                f"model.uri {spec.uri}: the Hugging Face hub is not reachable here (offline); "
                "copy the model to a pvc:// or file:// path and point model.uri at it"
            )
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(repo, revision=spec.revision, token=env.get("HF_TOKEN")))
        except Exception as exc:
            raise BadInputError(f"model.uri {spec.uri}: download failed: {str(exc).splitlines()[0]}") from exc
    else:
        try:
            path = resolve_uri(spec.uri, env)
        except ValueError as exc:
            raise BadInputError(f"model.uri: {exc}") from exc
    if not path.exists():
        raise BadInputError(f"model.uri {spec.uri}: {path} does not exist; check the path and the volume it is on")
    if not (path / "config.json").is_file():
        raise BadInputError(
            f"model.uri {spec.uri}: {path} is not a Hugging Face model folder (no config.json); "
            "point it at a folder written by save_pretrained"
        )
    return path


def sentence_pooling(path: Path) -> Pooling | None:
    """The pooling a sentence-transformers model was trained with, if it is one."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text())
        pool_dir = next(m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
        conf = json.loads((path / pool_dir / "config.json").read_text())
    except (StopIteration, KeyError, OSError, ValueError):
        return None
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    if conf.get("pooling_mode_cls_token"):
        mode = "cls"
    elif conf.get("pooling_mode_max_tokens"):
        mode = "max"
    else:
        mode = "mean"
    return Pooling(mode=mode, normalize=normalize)


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved beside the model, with a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise BadInputError(
            f"model.uri: no usable tokenizer in {path} ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
            "save the tokenizer beside the model"
        ) from exc
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            raise BadInputError(f"model.uri: the tokenizer in {path} has no pad, eos or unk token; add a pad token")
    tok.padding_side = "right"
    return tok


def load_model(path: Path, task: Task, label_names: list[str], tokenizer: Any) -> nn.Module:
    """The pretrained model with a new head sized to the labels (or its LM head).

    Raises:
        BadInputError: when the folder's weights or config cannot be loaded.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as exc:
        raise BadInputError(f"model.uri: {path}/config.json is not a valid model config: {exc}") from exc
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    try:
        if task == Task.CAUSAL_LM:
            return AutoModelForCausalLM.from_pretrained(str(path), config=config)
        id2label = dict(enumerate(label_names))
        label2id = {name: i for i, name in enumerate(label_names)}
        pooling = sentence_pooling(path)
        if pooling is not None:
            from kadapt_trainer.pooled import PooledSequenceClassifier

            backbone = AutoModel.from_pretrained(str(path), config=config)
            config.num_labels = len(label_names)
            config.id2label = id2label
            config.label2id = label2id
            config.kadapt_pooling = pooling.mode
            config.kadapt_normalize = pooling.normalize
            config.auto_map = {"AutoModelForSequenceClassification": f"{POOLED_MODULE_FILE[:-3]}.{POOLED_CLASS}"}
            return PooledSequenceClassifier(config, backbone=backbone)
        config.num_labels = len(label_names)
        config.id2label = id2label
        config.label2id = label2id
        return AutoModelForSequenceClassification.from_pretrained(
            str(path), config=config, ignore_mismatched_sizes=True
        )
    except BadInputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"model.uri: cannot load a {task} model from {path}: {first}") from exc


def write_pooled_code(model: nn.Module, out: Path) -> None:
    """Put the pooled model's code beside its weights so that from_pretrained finds it."""
    from kadapt_trainer import pooled

    base = getattr(model, "get_base_model", lambda: model)()
    if type(base).__name__ == POOLED_CLASS:
        shutil.copyfile(pooled.__file__, out / POOLED_MODULE_FILE)
