"""The spec a job started with: children are always rendered from it, whatever was edited since.

Everything in ``spec`` except ``budget`` and ``runPolicy`` is immutable. The CRD's CEL rules
refuse such changes at admission, but an API server without them (an old CRD, a cluster
that skips CEL, an emulator) lets one through, and the next gang restart would then run a
new image, queue or model under the old job's name, checkpoint and cost. So when the
operator first creates the children it stores the immutable part of the spec, with its
generation, in the annotation ``kadapt.dev/started-spec`` on the job: in the API server,
so a restarted operator keeps it. Every reconcile renders from that stored spec plus the
current mutable fields; a change of an immutable field is ignored and says so
(``SpecApplied=False``, reason ``ImmutableFieldChanged``, a Warning Event), and
``status.observedGeneration`` stays at the last generation the operator acted on.

Pure: the reconcile reads the annotation and writes it; these functions decide.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kadapt_operator.api import MUTABLE_SPEC_FIELDS, AdaptationJob, AdaptationJobStatus
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.options import PREFIX
from kadapt_operator.validation import SpecInvalid, validate_object

log = logging.getLogger("kadapt.operator")

#: The immutable part of the spec the children were first rendered from, and its generation (JSON).
ANN_STARTED_SPEC = f"{PREFIX}/started-spec"
#: Condition: whether every field of the current spec generation is in effect.
SPEC_APPLIED = "SpecApplied"
#: Merged specs kept validated (a job whose stored spec differs from its current one is re-read every tick).
MERGED_CACHE_SIZE = 1024


class StartedSpec(BaseModel):
    """What ``kadapt.dev/started-spec`` holds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    generation: int | None = None
    #: ``spec`` without its mutable fields, as the model dumps it (camelCase, no nulls).
    spec: dict[str, Any]


@dataclass(frozen=True)
class Pinned:
    """The spec to act on, and the immutable changes of the current generation that it ignores."""

    job: AdaptationJob
    #: ``spec.<field>`` names whose current value differs from the started one (empty: all applied).
    ignored: tuple[str, ...] = ()
    #: The started spec as stored (None: nothing stored yet, the children were never created).
    started: StartedSpec | None = None


def immutable_spec(job: AdaptationJob) -> dict[str, Any]:
    """The job's spec without the fields that may change after creation."""
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: value for key, value in spec.items() if key not in MUTABLE_SPEC_FIELDS}


def started_annotation(job: AdaptationJob, generation: int | None) -> dict[str, str]:
    """The annotation that records ``job``'s spec as the one its children are rendered from."""
    started = StartedSpec(generation=generation, spec=immutable_spec(job))
    return {ANN_STARTED_SPEC: started.model_dump_json()}


def read_started(annotations: Mapping[str, str]) -> StartedSpec | None:
    """The stored started spec; None when absent or unreadable (then the current spec is used)."""
    raw = annotations.get(ANN_STARTED_SPEC)
    if raw is None:
        return None
    try:
        return StartedSpec.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        log.warning("annotation %s does not parse (%s): rendering from the current spec", ANN_STARTED_SPEC, exc)
        return None


def pin(job: AdaptationJob, annotations: Mapping[str, str]) -> Pinned:
    """The job to act on: the started immutable fields with the current mutable ones."""
    started = read_started(annotations)
    if started is None or immutable_spec(job) == started.spec:
        return Pinned(job, (), started)
    current = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    merged = {**started.spec, **{key: current[key] for key in MUTABLE_SPEC_FIELDS if key in current}}
    doc = {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "metadata": job.metadata.model_dump(mode="json", exclude_none=True),
        "spec": merged,
    }
    effective = _validated(json.dumps(doc, sort_keys=True))
    if effective is None:
        return Pinned(job, (), None)
    now, then = immutable_spec(job), immutable_spec(effective)
    ignored = tuple(sorted(f"spec.{key}" for key in set(now) | set(then) if now.get(key) != then.get(key)))
    return Pinned(effective if ignored else job, ignored, started)


@functools.lru_cache(maxsize=MERGED_CACHE_SIZE)
def _validated(doc: str) -> AdaptationJob | None:
    """The merged job, validated once per distinct document (validation renders it: not cheap)."""
    try:
        return validate_object(json.loads(doc))
    except SpecInvalid as exc:
        log.warning("the started spec in %s no longer validates (%s): rendering from the current spec",
                    ANN_STARTED_SPEC, exc)
        return None


def observed_generation(pinned: Pinned, generation: int | None, old: AdaptationJobStatus) -> int | None:
    """``status.observedGeneration``: the generation acted on, never one whose changes are ignored."""
    if not pinned.ignored:
        return generation
    if old.observed_generation is not None:
        return old.observed_generation
    return pinned.started.generation if pinned.started is not None else None


def spec_condition(pinned: Pinned, old: AdaptationJobStatus, generation: int | None) -> st.CondUpdate | None:
    """``SpecApplied``: False naming the ignored fields; True again once they are reverted.

    Absent on jobs whose spec was never changed in an immutable field (most jobs).
    """
    if pinned.ignored:
        started = pinned.started.generation if pinned.started is not None else None
        message = (
            f"{', '.join(pinned.ignored)} changed after the job started and is ignored: the gang keeps running "
            f"the spec of generation {started}, and status.observedGeneration stays below generation "
            f"{generation}. Revert the change, or create a new AdaptationJob (a new name, or delete and "
            "re-create) to run it; only spec.budget and spec.runPolicy may change"
        )
        return st.CondUpdate(SPEC_APPLIED, st.FALSE, st.Reason.IMMUTABLE_FIELD_CHANGED, message)
    if st.condition(old, SPEC_APPLIED) is not None:
        return st.CondUpdate(SPEC_APPLIED, st.TRUE, st.Reason.SPEC_APPLIED, f"generation {generation} is in effect")
    return None
