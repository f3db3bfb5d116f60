"""The results record behind "a GitOps re-apply does not train again", and the started spec (pure rules)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

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
from kadapt_operator.runtime.pinned import (
    ANN_STARTED_SPEC,
    Pinned,
    observed_generation,
    pin,
    read_started,
    spec_condition,
    started_annotation,
)
from kadapt_operator.validation import validate_object
from tests.harness.emulator import job_manifest


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
