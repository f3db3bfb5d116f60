"""The stored AdaptationJob, typed: its metadata and status read once, its status written by one helper.

This is the one place where the operator turns the API server's JSON into models and
back. Reading is tolerant: a status field that no longer parses (a hand-edited timestamp,
a value an older operator wrote) is dropped and logged rather than failing every
reconcile. Writing is a JSON merge patch of exactly what changed between the status as
read and the status as built, so an idle job gets no PATCH at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from kadapt_operator.api import AdaptationJobStatus, RunPolicySpec

log = logging.getLogger("kadapt.operator")

DEFAULT_NAMESPACE = "default"

M = TypeVar("M", bound=BaseModel)


class OwnerReference(BaseModel):
    """One ``metadata.ownerReferences`` entry (the fields kadapt reads)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


class StoredMeta(BaseModel):
    """The metadata fields the operator reads from a stored object."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    name: str = ""
    namespace: str = DEFAULT_NAMESPACE
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)

    @property
    def controller_uid(self) -> str | None:
        """The uid of the object's controller owner, if any."""
        return next((ref.uid for ref in self.owner_references if ref.controller), None)

    @property
    def resource_version_number(self) -> int:
        """``resourceVersion`` as a number for "which copy is newer" (0 when unknown)."""
        try:
            return int(self.resource_version or 0)
        except ValueError:
            return 0


def meta_of(body: Mapping[str, Any] | None) -> StoredMeta:
    """The typed metadata of a stored object (unparsable fields fall back to their defaults)."""
    return _tolerant(StoredMeta, (body or {}).get("metadata"))


def status_of(body: Mapping[str, Any] | None) -> AdaptationJobStatus:
    """The typed status of a stored AdaptationJob (an empty one when it has none yet)."""
    return _tolerant(AdaptationJobStatus, (body or {}).get("status"))


def _tolerant(model: type[M], raw: Any) -> M:
    """Parse ``raw``; drop the top-level fields that do not parse, naming them in the log."""
    parsed, dropped = _parse_dropping(model, raw)
    if dropped:
        log.warning("%s: ignoring fields that do not parse: %s", model.__name__, ", ".join(sorted(dropped)))
    return parsed


def _parse_dropping(model: type[M], raw: Any) -> tuple[M, dict[str, Any]]:
    """``raw`` parsed without its top-level fields that do not parse, and those fields as they were."""
    data = dict(raw) if isinstance(raw, Mapping) else {}
    dropped: dict[str, Any] = {}
    while True:
        try:
            return model.model_validate(data), dropped
        except ValidationError as exc:
            bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            bad &= set(data)
            if not bad:
                return model(), dropped
            for key in bad:
                dropped[key] = data.pop(key)


def unparsable_status(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The top-level ``status`` fields of a stored AdaptationJob that do not parse (the reconcile drops them)."""
    return _parse_dropping(AdaptationJobStatus, (body or {}).get("status"))[1]


class _Lifecycle(BaseModel):
    """The one part of an invalid spec the operator still reads: its run policy (for the TTL)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    run_policy: RunPolicySpec = Field(default_factory=RunPolicySpec)


def run_policy_of(body: Mapping[str, Any] | None) -> RunPolicySpec:
    """``spec.runPolicy`` of a stored object whose spec may be invalid (defaults where it does not parse)."""
    return _tolerant(_Lifecycle, (body or {}).get("spec")).run_policy


def view(status: AdaptationJobStatus) -> dict[str, Any]:
    """The status as the API server stores it: camelCase JSON of the fields that are set."""
    return status.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: maps merge, a None deletes."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif before != value or key not in old:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def status_patch(old: AdaptationJobStatus, new: AdaptationJobStatus) -> dict[str, Any] | None:
    """The merge patch for ``status`` from what was read to what was built; None when nothing changed."""
    return merge_patch(view(old), view(new)) or None
