"""Validation shared by `kadapt validate`, the operator and the local runner.

Turns pydantic's errors into ``SpecError`` objects that name the field path as a user
writes it (``spec.strategy.lora.rank``) and say what to change; reports every error at
once. Also checks what the schema cannot see (batch size against world size).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kadapt_operator.api import AdaptationJob


@dataclass(frozen=True)
class SpecError:
    """One problem in a manifest: where it is and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class SpecInvalid(ValueError):
    """A manifest that kadapt will not run; carries every error found."""

    def __init__(self, errors: list[SpecError], source: str = "") -> None:
        self.errors = errors
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(str(e) for e in errors))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (for did-you-mean hints)."""
    model: Any = AdaptationJob
    for part in loc:
        if isinstance(part, int):
            continue
        field = None
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                field = info
                break
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for cand in candidates:
            inner = [cand, *getattr(cand, "__args__", ())]
            found = next((c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if found is not None:
                model = found
                break
        else:
            return None
    return model if isinstance(model, type) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        known = _field_names(owner) if owner else []
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else f"allowed fields: {', '.join(sorted(known))}"
        return f"unknown field; {hint}"
    if kind == "missing":
        return "required field is missing; add it"
    if kind in ("enum", "literal_error"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err['input']!r} is not allowed; use one of {expected}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(err.get("ctx", {}).values()), "?")
        return f"must be {bounds[kind]} {limit} (got {err['input']!r}); change it to a value {bounds[kind]} {limit}"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        return "must be a DNS label: lowercase letters, digits and '-', at most 63 characters"
    msg: str = err["msg"]
    return f"{msg} (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else msg


def _errors_from(exc: ValidationError) -> list[SpecError]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # Model validators report at the object; name the object path, as the CEL message does.
        out.append(SpecError(_path(loc) or "(document)", _message(err)))
    return out


def semantic_errors(job: AdaptationJob) -> list[SpecError]:
    """Rules that need more than one object's fields: what CEL cannot express well."""
    errors: list[SpecError] = []
    spec = job.spec
    res = spec.resources
    ranks = res.workers * max(res.gpus_per_worker, 1)
    per_step = spec.training.micro_batch_size * ranks
    if spec.training.global_batch_size % per_step:
        errors.append(
            SpecError(
                "spec.training.globalBatchSize",
                f"{spec.training.global_batch_size} is not a multiple of microBatchSize x ranks "
                f"({spec.training.micro_batch_size} x {ranks} = {per_step}); "
                f"use {max(per_step, spec.training.global_batch_size // per_step * per_step)}",
            )
        )
    if spec.output.uri.startswith("hf://"):
        errors.append(SpecError("spec.output.uri", "hf:// outputs are not supported; use pvc:// or file://"))
    if spec.dataset.uri.startswith("hf://"):
        errors.append(
            SpecError("spec.dataset.uri", "hf:// datasets are not supported; save it to a pvc:// path first")
        )
    if spec.deepspeed.zero_stage == 3 and spec.strategy.type == "head-only":
        errors.append(
            SpecError(
                "spec.deepspeed.zeroStage",
                "head-only trains a small head on cached features; ZeRO 3 only adds overhead; use 0",
            )
        )
    return errors


def validate_object(obj: Any, source: str = "") -> AdaptationJob:
    """Parse and validate one manifest object.

    Raises:
        SpecInvalid: with every error found, each naming its field path.
    """
    if not isinstance(obj, dict):
        raise SpecInvalid([SpecError("(document)", "expected a mapping with apiVersion, kind, metadata, spec")], source)
    try:
        job = AdaptationJob.model_validate(obj)
    except ValidationError as exc:
        raise SpecInvalid(_errors_from(exc), source) from None
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        raise SpecInvalid([SpecError("(document)", f"cannot be read: {exc}")], source) from None
    # Names the API server would refuse in the rendered children are caught here too, so that
    # `kadapt validate`, the operator and `kadapt run` reject exactly the same manifests.
    from kadapt_operator.render import render_errors

    errors = semantic_errors(job) + render_errors(job)
    if errors:
        raise SpecInvalid(errors, source)
    return job


def load_documents(path: Path) -> list[Any]:
    """YAML documents of a file (empty documents skipped).

    Raises:
        SpecInvalid: when the file is missing or is not YAML.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecInvalid([SpecError("(file)", f"cannot read: {exc.strerror}")], str(path)) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecInvalid([SpecError("(file)", f"not valid YAML: {exc}")], str(path)) from None
    if not docs:
        raise SpecInvalid([SpecError("(file)", "no YAML document found")], str(path))
    return docs


def load_jobs(path: Path) -> list[AdaptationJob]:
    """Every AdaptationJob in a file, validated; errors from all documents at once."""
    jobs: list[AdaptationJob] = []
    errors: list[SpecError] = []
    docs = load_documents(path)
    for i, doc in enumerate(docs):
        try:
            jobs.append(validate_object(doc))
        except SpecInvalid as exc:
            prefix = f"[doc {i}] " if len(docs) > 1 else ""
            errors.extend(SpecError(prefix + e.path, e.message) for e in exc.errors)
    if errors:
        raise SpecInvalid(errors, str(path))
    return jobs
