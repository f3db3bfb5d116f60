"""The results record behind "a GitOps re-apply does not train again", and the started spec (pure rules)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from kadapt_operator.api import AdaptationJobStatus
from kadapt_operator.results import (
    ANN_RERUN,
    MAX_RESULTS,
    RESULTS_CONFIG_MAP,
    pruned,
    record_entry,
    record_key,
    record_patch,
    results_config_map,
    reusable_result,
    reuse_message,
    spec_hash,
)
from kadapt_operator.runtime import reuse
from kadapt_operator.runtime.client import CONFIG_MAPS, ApiError, Kind, KubeClient
from kadapt_operator.runtime.options import RuntimeOptions
from kadapt_operator.runtime.pinned import (
    ANN_STARTED_SPEC,
    Pinned,
    observed_generation,
    pin,
    read_started,
    spec_condition,
    started_annotation,
)
from kadapt_operator.runtime.world import Runtime
from kadapt_operator.settings import OperatorSettings
from kadapt_operator.validation import validate_object
from tests.harness.emulator import TEST_SETTINGS, job_manifest


def _job(uid: str, **meta: Any) -> Any:
    doc = job_manifest("tuned", "team-a")
    doc["metadata"].update(uid=uid, **meta)
    return validate_object(doc)


def test_the_hash_ignores_budget_and_run_policy_but_not_what_is_trained() -> None:
    base = job_manifest("tuned", "team-a")
    budget = copy.deepcopy(base)
    budget["spec"]["budget"] = {"maxCost": 10}
    budget["spec"]["runPolicy"] = {"ttlSecondsAfterFinished": 60}
    epochs = copy.deepcopy(base)
    epochs["spec"]["training"]["epochs"] = 9
    assert spec_hash(validate_object(base)) == spec_hash(validate_object(budget))
    assert spec_hash(validate_object(base)) != spec_hash(validate_object(epochs))


def test_a_recreated_identical_job_reuses_the_result_and_a_rerun_does_not() -> None:
    first = _job("uid-1")
    data = record_entry(first, "2026-12-01T03:00:00Z", {"accuracy": 0.91})
    again = _job("uid-2")
    record = reusable_result(again, data)
    assert record is not None and record.job == "tuned" and record.uid == "uid-1"
    assert record.output_uri == "pvc://out/tuned" and record.metrics == {"accuracy": 0.91}
    assert reusable_result(first, data) is None, "a job never succeeds from its own record"
    assert reusable_result(_job("uid-3", annotations={ANN_RERUN: "true"}), data) is None
    assert reusable_result(again, {}) is None
    assert reusable_result(again, {record_key(spec_hash(again)): "{not json"}) is None


def test_the_record_configmap_is_valid_and_bounded() -> None:
    entry = record_entry(_job("uid-1"), "2026-12-01T03:00:00Z", {})
    kubernetes_validate.validate(results_config_map("team-a", entry), "1.32", strict=True)
    assert results_config_map("team-a", entry)["metadata"]["name"] == RESULTS_CONFIG_MAP
    data = {f"result.{i:04d}": f'{{"job":"j","uid":"u{i}","outputUri":"o","completionTime":"t{i:04d}"}}'
            for i in range(MAX_RESULTS + 3)}
    assert sorted(pruned(data)) == ["result.0000", "result.0001", "result.0002"]
    assert pruned(entry) == {}


def test_recording_adds_to_the_records_once_and_drops_the_oldest() -> None:
    entry = record_entry(_job("uid-1"), "2026-12-01T03:00:00Z", {"accuracy": 0.9})
    assert record_patch(None, entry) == entry
    assert record_patch(entry, entry) == {}, "the same record again is no write"
    full = {f"result.{i:04d}": f'{{"job":"j","uid":"u{i}","outputUri":"o","completionTime":"2026-11-{i % 28 + 1:02d}"}}'
            for i in range(MAX_RESULTS)}
    patch = record_patch(full, entry)
    assert patch[next(iter(entry))] == next(iter(entry.values()))
    assert sum(1 for v in patch.values() if v is None) == 1, "one old record dropped for the new one"


def test_the_reuse_message_names_the_earlier_job_and_how_to_train_again() -> None:
    first = _job("uid-1")
    record = reusable_result(_job("uid-2"), record_entry(first, "2026-12-01T03:00:00Z", {}))
    assert record is not None
    message = reuse_message(record)
    assert "tuned" in message and "uid-1" in message and "pvc://out/tuned" in message and ANN_RERUN in message


def test_the_started_spec_wins_over_an_immutable_change_and_holds_back_observed_generation() -> None:
    started = _job("uid-1")
    annotations = started_annotation(started, 1)
    assert pin(started, annotations) == Pinned(started, (), read_started(annotations))
    changed = job_manifest("tuned", "team-a")
    changed["metadata"].update(uid="uid-1", generation=3)
    changed["spec"].update(image="registry.example/other:1", queueName="gpu", budget={"maxCost": 5})
    pinned = pin(validate_object(changed), annotations)
    assert pinned.ignored == ("spec.image", "spec.queueName")
    assert pinned.job.spec.image is None and pinned.job.spec.queue_name is None
    assert pinned.job.spec.budget.max_cost == 5, "mutable fields come from the current generation"
    old = AdaptationJobStatus(observed_generation=2)
    assert observed_generation(pinned, 3, old) == 2
    assert observed_generation(pin(started, annotations), 4, old) == 4
    condition = spec_condition(pinned, old, 3)
    assert condition is not None and condition.status == "False" and condition.reason == "ImmutableFieldChanged"
    assert spec_condition(pin(started, annotations), old, 4) is None, "no condition on jobs never changed"


def test_without_a_readable_started_spec_the_current_spec_is_used() -> None:
    job = _job("uid-1")
    assert pin(job, {}) == Pinned(job)
    assert pin(job, {ANN_STARTED_SPEC: "{not json"}) == Pinned(job)
    assert pin(job, {ANN_STARTED_SPEC: '{"generation": 1, "spec": {"model": {"uri": 7}}}'}) == Pinned(job)


class _ConfigMapStore(KubeClient):
    """The API server's side of ``kadapt-results`` for :func:`reuse.remember`: a resourceVersion-guarded
    merge patch, and a scripted answer per write (None: accept) to play a racing writer or a refusal."""

    def __init__(self, answers: list[ApiError | None]) -> None:  # no connection pool: nothing is sent
        self.stored: dict[str, Any] | None = None
        self.answers = answers
        self.writes: list[dict[str, Any]] = []

    def _answer(self) -> None:
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        assert (kind, name) == (CONFIG_MAPS, RESULTS_CONFIG_MAP)
        return copy.deepcopy(self.stored)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(obj)
        self._answer()
        self.stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
        return self.stored

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        assert self.stored is not None
        self.writes.append(patch)
        self._answer()
        assert patch["metadata"]["resourceVersion"] == self.stored["metadata"]["resourceVersion"], "unguarded write"
        data = {**self.stored["data"], **patch["data"]}
        version = str(int(self.stored["metadata"]["resourceVersion"]) + 1)
        self.stored = {**self.stored, "data": {k: v for k, v in data.items() if v is not None},
                       "metadata": {**self.stored["metadata"], "resourceVersion": version}}
        return self.stored


def _remember(store: _ConfigMapStore, uid: str, **changes: Any) -> None:
    doc = job_manifest("tuned", "team-a")
    doc["metadata"]["uid"] = uid
    doc["spec"]["training"].update(changes)
    status = AdaptationJobStatus(completion_time=datetime(2026, 12, 1, 3, tzinfo=UTC))
    status.output.metrics = {"accuracy": 0.9}
    settings = OperatorSettings.model_validate(TEST_SETTINGS)
    runtime = Runtime(settings=settings, options=RuntimeOptions(namespaces=("team-a",)), client=store)
    asyncio.run(reuse.remember(runtime, validate_object(doc), status))


def test_recording_creates_the_configmap_then_patches_it_guarded_and_reads_again_after_a_conflict() -> None:
    store = _ConfigMapStore([None, ApiError(409, "the object has been modified", "Conflict"), None])
    _remember(store, "uid-1")
    assert store.stored is not None and len(store.stored["data"]) == 1
    _remember(store, "uid-2", epochs=9)  # another spec: a second record, written again after the conflict
    assert len(store.writes) == 3 and len(store.stored["data"]) == 2
    _remember(store, "uid-2", epochs=9)
    assert len(store.writes) == 3, "an identical record is not written again"


def test_a_refused_record_is_skipped_and_an_unavailable_api_server_retried() -> None:
    store = _ConfigMapStore([ApiError(403, "forbidden", "Forbidden")])
    _remember(store, "uid-1")  # logged: the job still succeeds, an identical one would train again
    assert store.stored is None
    with pytest.raises(ApiError):
        _remember(_ConfigMapStore([ApiError(503, "unavailable", "ServiceUnavailable")]), "uid-1")
