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

from kadapt_operator import labels
from kadapt_operator.api import AdaptationJob
from kadapt_trainer.config import gradient_accumulation, pvc_claim


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
    try:
        gradient_accumulation(spec.training, ranks)
    except ValueError as exc:
        errors.append(SpecError("spec.training.globalBatchSize", str(exc)))
    if spec.output.uri.startswith("hf://"):
        errors.append(SpecError("spec.output.uri", "hf:// outputs are not supported; use pvc:// or file://"))
    if spec.dataset.uri.startswith("hf://"):
        errors.append(SpecError("spec.dataset.uri", "hf:// datasets are not supported; save it to a pvc:// path first"))
    if spec.deepspeed.zero_stage == 3 and spec.strategy.type == "head-only":
        errors.append(
            SpecError(
                "spec.deepspeed.zeroStage",
                "head-only trains a small head on cached features; ZeRO 3 only adds overhead; use 0",
            )
        )
    return errors


def locations(job: AdaptationJob) -> list[tuple[str, str, bool]]:
    """(field path, uri, written by the trainer) of every location the pods touch."""
    spec = job.spec
    out = [
        ("spec.model.uri", spec.model.uri, False),
        ("spec.dataset.uri", spec.dataset.uri, False),
    ]
    if spec.dataset.validation_uri:
        out.append(("spec.dataset.validationUri", spec.dataset.validation_uri, False))
    out.append(("spec.output.uri", spec.output.uri, True))
    checkpoint = spec.checkpoint.uri or spec.output.uri.rstrip("/") + "/checkpoints"
    out.append(("spec.checkpoint.uri" if spec.checkpoint.uri else "spec.output.uri", checkpoint, True))
    return out


def _scheduling_errors(job: AdaptationJob) -> list[SpecError]:
    """Node selector, tolerations and priority class as the API server would check them."""
    res = job.spec.resources
    errors: list[SpecError] = []
    for key, value in sorted(res.node_selector.items()):
        if not labels.is_qualified_name(key):
            errors.append(
                SpecError("spec.resources.nodeSelector", f"{key!r} is not a label key, e.g. nvidia.com/gpu.product")
            )
        if not labels.is_label_value(value):
            errors.append(
                SpecError(
                    f"spec.resources.nodeSelector.{key}",
                    f"{value!r} is not a label value: at most 63 letters, digits, '-', '_' or '.'",
                )
            )
    for i, tol in enumerate(res.tolerations):
        path = f"spec.resources.tolerations[{i}]"
        if tol.key is not None and not labels.is_qualified_name(tol.key):
            errors.append(SpecError(f"{path}.key", f"{tol.key!r} is not a taint key, e.g. nvidia.com/gpu"))
        if tol.key is None and tol.operator != "Exists":
            errors.append(SpecError(f"{path}.operator", "a toleration without key must use operator: Exists"))
        if tol.operator == "Exists" and tol.value:
            errors.append(SpecError(f"{path}.value", "must be empty with operator: Exists; remove it"))
        if tol.value is not None and not labels.is_label_value(tol.value):
            errors.append(SpecError(f"{path}.value", f"{tol.value!r} is not a valid taint value"))
    if res.priority_class_name is not None and not labels.is_dns_subdomain(res.priority_class_name):
        errors.append(
            SpecError("spec.resources.priorityClassName", f"{res.priority_class_name!r} is not a PriorityClass name")
        )
    return errors


def naming_errors(job: AdaptationJob) -> list[SpecError]:
    """What would make the rendered objects invalid, though the AdaptationJob schema allows it."""
    errors: list[SpecError] = []
    name = job.metadata.name
    if not labels.is_dns_1035_label(name):
        errors.append(SpecError("metadata.name", f"{name!r} must start with a letter: it also names the job's Service"))
    last_host = labels.pod_hostname(name, job.spec.resources.workers - 1)
    if len(last_host) > labels.DNS_LABEL_MAX:
        errors.append(
            SpecError(
                "metadata.name",
                f"too long for {job.spec.resources.workers} workers: pod hostname {last_host!r} exceeds "
                f"{labels.DNS_LABEL_MAX} characters; use at most {labels.DNS_LABEL_MAX - len(last_host) + len(name)}",
            )
        )
    namespace = job.metadata.namespace
    if not labels.is_dns_label(namespace):
        errors.append(SpecError("metadata.namespace", f"{namespace!r} is not a namespace name"))
    for path, uri, _written in locations(job):
        claim = pvc_claim(uri)
        if claim is not None and not labels.is_dns_subdomain(claim):
            errors.append(
                SpecError(
                    path,
                    f"{claim!r} is not a PersistentVolumeClaim name: use lowercase letters, digits, '-' and '.'"
                    " as in pvc://my-claim/path",
                )
            )
    secret = job.spec.model.secret_ref
    if secret is not None and not labels.is_dns_subdomain(secret):
        errors.append(SpecError("spec.model.secretRef", f"{secret!r} is not a Secret name"))
    queue = job.spec.queue_name
    if queue is not None and not labels.is_dns_subdomain(queue):
        errors.append(SpecError("spec.queueName", f"{queue!r} is not a Kueue LocalQueue name"))
    errors.extend(_scheduling_errors(job))
    return list(dict.fromkeys(errors))


def spec_errors(job: AdaptationJob) -> list[SpecError]:
    """Everything the schema cannot catch, each error once.

    Names the API server would refuse in the rendered children are caught here too, so that
    `kadapt validate`, the operator and `kadapt run` reject exactly the same manifests, and
    rendering a validated job cannot fail.
    """
    return list(dict.fromkeys(semantic_errors(job) + naming_errors(job)))


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
    errors = spec_errors(job)
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
