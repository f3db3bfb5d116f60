"""The results record behind "a GitOps re-apply does not train again" (pure rules)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

from kadapt_operator.results import (
    ANN_RERUN,
    MAX_RESULTS,
    RESULTS_CONFIG_MAP,
    pruned,
    record_entry,
    record_key,
    results_config_map,
    reusable_result,
    spec_hash,
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
