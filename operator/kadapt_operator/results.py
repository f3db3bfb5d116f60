"""Finished results, remembered outside the AdaptationJob: a GitOps re-apply does not train again.

Argo CD's self-heal or a Flux re-apply re-creates an AdaptationJob that was deleted (by hand,
or by an older kadapt's TTL). Training it again would pay the whole GPU bill for a result that
already sits at its output. So when a job succeeds, the operator records the result in the
namespace's ConfigMap ``kadapt-results``, keyed by a hash of everything that decides what
is trained (the spec without ``budget`` and ``runPolicy``). A job created later with the
same hash and the same output URI succeeds at once from that record, naming the earlier job.
The annotation ``kadapt.dev/rerun: "true"`` asks for a new training run anyway.

Pure: the runtime reads and patches the ConfigMap; these functions decide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from kadapt_operator.api import MUTABLE_SPEC_FIELDS, AdaptationJob
from kadapt_trainer.config import API_GROUP

#: The ConfigMap (in each job's namespace) holding the results of succeeded jobs.
RESULTS_CONFIG_MAP = "kadapt-results"
#: Annotation that asks for a new training run although an identical job already succeeded.
ANN_RERUN = f"{API_GROUP}/rerun"
#: Results kept per namespace (the oldest are dropped first); a ConfigMap holds at most 1 MiB.
MAX_RESULTS = 500
_KEY_PREFIX = "result."


def spec_hash(job: AdaptationJob) -> str:
    """A stable hash of what decides the trained result: the spec without budget and runPolicy."""
    spec = job.spec.model_dump(mode="json", by_alias=True)
    for mutable in MUTABLE_SPEC_FIELDS:
        spec.pop(mutable, None)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def wants_rerun(job: AdaptationJob) -> bool:
    """Whether the job asks to train again although an identical one succeeded."""
    return job.metadata.annotations.get(ANN_RERUN, "").strip().lower() in ("true", "yes", "1")


class ResultRecord(BaseModel):
    """One succeeded job's result, as remembered in ``kadapt-results``."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore")

    job: str
    uid: str
    output_uri: str
    completion_time: str
    metrics: dict[str, float] = Field(default_factory=dict)


def record_key(hash_: str) -> str:
    """The ConfigMap data key of a spec hash."""
    return _KEY_PREFIX + hash_


def record_entry(job: AdaptationJob, completion_time: str, metrics: Mapping[str, float]) -> dict[str, str]:
    """The ``data`` merge patch that records ``job``'s success."""
    record = ResultRecord(
        job=job.metadata.name,
        uid=job.metadata.uid or "",
        output_uri=job.spec.output.uri,
        completion_time=completion_time,
        metrics=dict(metrics),
    )
    return {record_key(spec_hash(job)): record.model_dump_json(by_alias=True)}


def reusable_result(job: AdaptationJob, data: Mapping[str, Any] | None) -> ResultRecord | None:
    """The earlier result this job may succeed from at once, or None to train.

    Only a record of the same spec hash and the same output URI counts (the hash covers the
    output too; the URI check guards against a record edited by hand), never the job's own
    incarnation, and never when the job asks for a rerun.
    """
    if wants_rerun(job) or not data:
        return None
    raw = data.get(record_key(spec_hash(job)))
    if raw is None:
        return None
    try:
        record = ResultRecord.model_validate(json.loads(str(raw)))
    except (ValueError, ValidationError):
        return None
    if record.output_uri != job.spec.output.uri or record.uid == (job.metadata.uid or ""):
        return None
    return record


def results_config_map(namespace: str, entry: Mapping[str, str]) -> dict[str, Any]:
    """The ``kadapt-results`` ConfigMap as first created, holding ``entry``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": RESULTS_CONFIG_MAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "kadapt", "app.kubernetes.io/component": "results",
                       "app.kubernetes.io/managed-by": "kadapt-operator"},
        },
        "data": dict(entry),
    }


def record_patch(data: Mapping[str, str] | None, entry: Mapping[str, str]) -> dict[str, str | None]:
    """The ``data`` merge patch that adds ``entry`` to the stored records and keeps them bounded.

    Returns {} when the records already hold exactly ``entry`` (nothing to write).
    """
    current = dict(data or {})
    if all(current.get(key) == value for key, value in entry.items()):
        return {}
    return {**entry, **pruned({**current, **entry})}


def reuse_message(record: ResultRecord) -> str:
    """The Succeeded condition's message of a job that succeeded from an earlier job's result."""
    return (
        f"succeeded at once from the result of the earlier job {record.job} (uid {record.uid}, finished "
        f"{record.completion_time}) with the same spec at {record.output_uri}; nothing was trained. "
        f'Annotate a new job {ANN_RERUN}: "true" to train again'
    )


def pruned(data: Mapping[str, str]) -> dict[str, str | None]:
    """A merge patch dropping the oldest records beyond :data:`MAX_RESULTS` ({} when within)."""
    records: list[tuple[str, str]] = []
    for key, raw in data.items():
        if not key.startswith(_KEY_PREFIX):
            continue
        try:
            records.append((ResultRecord.model_validate(json.loads(raw)).completion_time, key))
        except (ValueError, ValidationError):
            records.append(("", key))
    records.sort()
    excess = len(records) - MAX_RESULTS
    return {key: None for _, key in records[:excess]} if excess > 0 else {}
