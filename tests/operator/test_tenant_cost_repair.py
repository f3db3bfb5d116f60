"""A malformed cost ledger in status is repaired, named, and never fails the job's polls for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kadapt_operator.cost import CostLedger, PodInterval, accrue

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_bad_timestamp_is_repaired_to_the_next_sample_not_counted_twice() -> None:
    status = {"gpuSeconds": 600.0, "accountedUntil": {"pod-a": "yesterday-ish", "pod-b": "2026-12-01T03:05:00Z"}}
    ledger = CostLedger.from_status(status)  # the old reader raised ValueError here, on every poll
    assert ledger.gpu_seconds == 600.0 and set(ledger.accounted_until) == {"pod-b"}
    assert ledger.unreadable == {"pod-a"}
    assert len(ledger.problems) == 1 and "accountedUntil.pod-a" in ledger.problems[0]
    pods = [PodInterval("pod-a", 2, at(0)), PodInterval("pod-b", 1, at(0))]
    first = accrue(ledger, pods, at(310))
    # pod-a: repaired to now, nothing added (its time up to the bad mark is already in the total);
    # pod-b: 10 s since its good mark.
    assert first.added_gpu_seconds == pytest.approx(10.0)
    assert first.ledger.accounted_until["pod-a"] == at(310)
    second = accrue(CostLedger.from_status(first.status_patch()), pods, at(320))
    assert second.added_gpu_seconds == pytest.approx(2 * 10 + 10)
    assert second.ledger.problems == ()


@pytest.mark.parametrize("bad", ["lots", -5, float("nan"), [1]])
def test_a_bad_total_restarts_at_zero_and_says_so(bad: object) -> None:
    ledger = CostLedger.from_status({"gpuSeconds": bad, "accountedUntil": {}})
    assert ledger.gpu_seconds == 0.0
    assert ledger.problems and "gpuSeconds" in ledger.problems[0]


def test_a_mark_map_that_is_not_a_map_is_replaced() -> None:
    ledger = CostLedger.from_status({"gpuSeconds": 1.0, "accountedUntil": "garbage"})
    assert ledger.accounted_until == {} and ledger.problems
