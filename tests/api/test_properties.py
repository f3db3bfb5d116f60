"""Property-based: validation never raises anything but its own error, whatever it is fed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kadapt_operator.api import AdaptationJob
from kadapt_operator.validation import SpecInvalid, validate_object
from tests.conftest import EXAMPLES

SEEDS = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["lora", "full", "pvc://x/y", "hf://a/b", "", "-1", "fp16"]),
)
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def _check(obj: Any) -> None:
    try:
        job = validate_object(obj)
    except SpecInvalid as exc:
        assert exc.errors, "a rejection must carry at least one error"
        for err in exc.errors:
            assert err.path and err.message
    else:
        assert isinstance(job, AdaptationJob)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_like)
def test_random_documents(doc: Any) -> None:
    _check(doc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SEEDS))), st.data(), json_like)
def test_mutated_examples(seed: int, data: st.DataObject, value: Any) -> None:
    doc = copy.deepcopy(SEEDS[seed])
    path = data.draw(st.sampled_from(_paths(doc)))
    _check(_set(doc, path, value))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(range(len(SEEDS))), st.data(), st.text(min_size=1, max_size=15), json_like)
def test_examples_with_extra_fields(seed: int, data: st.DataObject, key: str, value: Any) -> None:
    doc = copy.deepcopy(SEEDS[seed])
    dicts = [p for p in _paths(doc) if isinstance(_get(doc, p), dict)]
    path = data.draw(st.sampled_from(dicts))
    _get(doc, path)[key] = value
    _check(doc)


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def test_examples_round_trip_through_the_model(tmp_path: Path) -> None:
    """Dumping a validated job by alias and validating again gives the same job."""
    for doc in SEEDS:
        job = validate_object(doc)
        again = validate_object(job.model_dump(by_alias=True, exclude_none=True, mode="json"))
        assert again == job
