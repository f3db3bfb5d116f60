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
    limit = position_limit(path)
    current = getattr(tok, "model_max_length", None)
    if limit is not None and (not isinstance(current, int) or current > limit):
        # encode() clamps dataset.maxLength to this, with a warning in the log and the result.
        tok.model_max_length = limit
    return tok


#: Config keys that hold the number of positions a model can embed, by architecture.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")
#: Models whose positions start after the padding index (RoBERTa's offset of pad_token_id + 1).
OFFSET_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "camembert", "longformer", "mpnet"})


def position_limit(path: Path) -> int | None:
    """Tokens per example the model can take (its position embeddings), from ``config.json``.

    None when the config names no limit (relative positions, e.g. T5).
    """
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for key in POSITION_KEYS:
        value = config.get(key, text_config.get(key))
        if isinstance(value, int) and value > 0:
            if config.get("model_type") in OFFSET_POSITION_TYPES:
                value -= int(config.get("pad_token_id") or 1) + 1
            return value
    return None


def check_precision(precision: str, cuda: bool | None = None, bf16_supported: bool | None = None) -> None:
    """Refuse a precision that cannot train on this worker, before the model is loaded.

    fp16 on CPU runs, but without CUDA's loss scaling and kernels it does not learn (a run
    "succeeds" at chance accuracy), and bf16 on a GPU without bf16 support fails or crawls.
    Refusing (exit 2, naming the fix) beats a silent fallback: the user asked for a precision,
    and the same manifest may be meant for a GPU node.

    Raises:
        BadInputError: fp16 without CUDA, or bf16 on a CUDA GPU that lacks it.
    """
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if precision == "fp16" and not cuda:
        raise BadInputError(
            "training.precision fp16 needs a CUDA GPU and this worker has none (on CPU fp16 does not learn); "
            "use precision fp32 here, or request GPUs (resources.gpusPerWorker)"
        )
    if precision == "bf16" and cuda:
        supported = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
        if not supported:
            raise BadInputError(
                "training.precision bf16 is not supported by this GPU (it needs Ampere or newer); "
                "use precision fp16 or fp32, or choose a newer gpuType"
            )


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
    """Complete an output folder so that it reloads through the standard entry point.

    Kept under its old name for the savers that call it; see ``complete_output``.
    """
    complete_output(model, out)


def complete_output(model: nn.Module, out: Path) -> None:
    """Make ``out`` (already holding ``model.save_pretrained``) reload and predict the same.

    - Pooled (sentence-transformers) models get their code beside the weights
      (``config.auto_map`` names it), so ``trust_remote_code=True`` rebuilds the pooling.
    - A LoRA *classification* adapter gets its base written beside it: ``config.json`` with
      the label configuration (``num_labels``, ``id2label``, ``label2id``; the pooled model's
      ``auto_map``) and the base weights with the LoRA layers taken out. The folder is then a
      model with an embedded adapter: ``AutoModelForSequenceClassification.from_pretrained(out)``
      builds the base from it (new head sized to the labels, the backbone's own pooling) and
      loads the adapter on top, under the same module names it was trained with, so no LoRA
      weight is dropped. Without it, PEFT rebuilds the base from the original model's config (a
      2-class head; a CLS head instead of the pooling) and the adapter fails or loads partly.
      Causal-lm adapters need no labels and stay adapter-only (``AutoModelForCausalLM`` or
      ``AutoPeftModelForCausalLM`` reload them over ``base_model_name_or_path``).
    """
    from kadapt_trainer import pooled

    base: Any = getattr(model, "get_base_model", lambda: model)()
    if type(base).__name__ == POOLED_CLASS:
        shutil.copyfile(pooled.__file__, out / POOLED_MODULE_FILE)
    peft_config = getattr(model, "peft_config", None)
    if not peft_config:
        return
    task_type = str(getattr(next(iter(peft_config.values())), "task_type", ""))
    if task_type.upper().endswith("SEQ_CLS"):
        base.save_pretrained(str(out), state_dict=base_state_dict(base))


#: Infixes PEFT puts into module names: LoRA's wrapped layer and the trained head's copies.
_PEFT_WRAPPED = ".base_layer."
_PEFT_ORIGINAL = ".original_module."


def base_state_dict(base: nn.Module) -> dict[str, Any]:
    """The base model's weights as the unwrapped model names them (LoRA and head copies removed)."""
    out: dict[str, Any] = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        clean = name.replace(_PEFT_WRAPPED, ".").replace(_PEFT_ORIGINAL, ".")
        out[clean] = tensor.detach().contiguous()
    return out
