"""The per-namespace spend ledger: periods, idempotent booking, survival of deletions, its ConfigMap.

Pure unit tests of ``kadapt_operator.ledger``; the emulator scenario (a namespace budget that
survives the deletion of its jobs and an operator restart) builds on these rules.
"""

from __future__ import annotations

from datetime import UTC, datetime

import kubernetes_validate
import pytest

from kadapt_operator.cost import REASON_NAMESPACE_BUDGET
from kadapt_operator.ledger import (
    BudgetPeriod,
    NamespaceLedger,
    data_patch,
    ledger_config_map,
    ledger_name,
    namespace_budget_decision,
    period_end,
    period_key,
)
from kadapt_operator.settings import load_settings

DEC = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
JAN = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "now", "key", "end"),
    [
        (BudgetPeriod.MONTH, datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2026-12", datetime(2027, 1, 1, tzinfo=UTC)),
        (BudgetPeriod.MONTH, datetime(2027, 1, 1, tzinfo=UTC), "2027-01", datetime(2027, 2, 1, tzinfo=UTC)),
        (BudgetPeriod.WEEK, datetime(2026, 12, 31, tzinfo=UTC), "2026-W53", datetime(2027, 1, 4, tzinfo=UTC)),
        (BudgetPeriod.WEEK, datetime(2027, 1, 4, tzinfo=UTC), "2027-W01", datetime(2027, 1, 11, tzinfo=UTC)),
        (BudgetPeriod.DAY, datetime(2026, 12, 1, 23, 0, tzinfo=UTC), "2026-12-01", datetime(2026, 12, 2, tzinfo=UTC)),
        (BudgetPeriod.TOTAL, DEC, "total", None),
    ],
)
def test_period_keys_and_resets(period: BudgetPeriod, now: datetime, key: str, end: datetime | None) -> None:
    assert period_key(period, now) == key
    assert period_end(period, now) == end


def test_booking_is_idempotent_and_books_only_growth() -> None:
    ledger = NamespaceLedger(namespace="team-a")
    first = ledger.book("uid-1", 2.0, 3600.0, DEC)
    assert (first.added_cost, first.added_gpu_seconds) == (2.0, 3600.0)
    again = first.ledger.book("uid-1", 2.0, 3600.0, DEC)
    assert again.added_cost == 0 and again.ledger == first.ledger
    grown = again.ledger.book("uid-1", 2.5, 4500.0, DEC)
    assert grown.added_cost == pytest.approx(0.5) and grown.ledger.spent(DEC) == pytest.approx(2.5)
    shrunk = grown.ledger.book("uid-1", 2.4, 4400.0, DEC)
    assert shrunk.added_cost == 0 and shrunk.ledger.spent(DEC) == pytest.approx(2.5)
    back = shrunk.ledger.book("uid-1", 2.5, 4500.0, DEC)
    assert back.added_cost == 0, "money booked once is never booked again"


def test_spend_survives_deleting_the_jobs_unlike_summing_status() -> None:
    ledger = NamespaceLedger(namespace="team-a")
    ledger = ledger.book("uid-1", 30.0, 1.0, DEC).ledger.book("uid-2", 25.0, 1.0, DEC).ledger
    ledger = ledger.forget([])  # both AdaptationJobs deleted (by hand or by their TTL)
    assert ledger.jobs == {} and ledger.spent(DEC) == pytest.approx(55.0)
    decision = namespace_budget_decision(ledger, {"team-a": 50.0}, DEC)
    assert decision.exceeded and decision.reason == REASON_NAMESPACE_BUDGET


def test_a_recreated_job_of_the_same_name_books_from_zero_under_its_new_uid() -> None:
    ledger = NamespaceLedger(namespace="team-a").book("old-uid", 10.0, 1.0, DEC).ledger.forget(["new-uid"])
    booking = ledger.book("new-uid", 1.0, 1.0, DEC)
    assert booking.added_cost == 1.0 and booking.ledger.spent(DEC) == pytest.approx(11.0)


def test_a_new_period_starts_at_zero_without_booking_old_money_again() -> None:
    ledger = NamespaceLedger(namespace="team-a").book("uid-1", 40.0, 1.0, DEC).ledger
    assert ledger.spent(JAN) == 0.0
    jan = ledger.book("uid-1", 41.0, 2.0, JAN).ledger
    assert jan.spent(JAN) == pytest.approx(1.0) and jan.spent(DEC) == pytest.approx(40.0)
    total = NamespaceLedger(namespace="team-a", period=BudgetPeriod.TOTAL).book("uid-1", 40.0, 1.0, DEC).ledger
    assert total.spent(JAN) == 40.0, "a total budget never resets"


def test_the_ledger_keeps_a_bounded_history() -> None:
    ledger = NamespaceLedger(namespace="team-a")
    for month in range(1, 13):
        ledger = ledger.book("uid-1", float(month), 0.0, datetime(2025, month, 2, tzinfo=UTC)).ledger
    ledger = ledger.book("uid-1", 13.0, 0.0, JAN).ledger
    ledger = ledger.book("uid-1", 14.0, 0.0, datetime(2027, 2, 1, tzinfo=UTC)).ledger
    assert len(ledger.spend) == 13 and "2025-01" not in ledger.spend


def test_configmap_round_trip_and_small_patches() -> None:
    ledger = NamespaceLedger(namespace="team-a").book("uid-1", 1.25, 1800.0, DEC).ledger
    obj = ledger_config_map(ledger, "kadapt-system")
    kubernetes_validate.validate(obj, "1.32", strict=True)
    assert obj["metadata"]["name"] == ledger_name("team-a") == "kadapt-spend-team-a"
    assert obj["metadata"]["namespace"] == "kadapt-system"
    read, problems = NamespaceLedger.from_data("team-a", obj["data"])
    assert read == ledger and problems == []
    after = read.book("uid-2", 0.5, 60.0, DEC).ledger.forget(["uid-2"]).to_data()
    patch = data_patch(obj["data"], after)
    assert patch["job.uid-1"] is None and "job.uid-2" in patch and patch["spend.2026-12"] == "1.75"
    assert "namespace" not in patch and data_patch(after, after) == {}


def test_unreadable_entries_are_dropped_and_named() -> None:
    data = {"spend.2026-12": "12.5", "spend.2026-11": "lots", "gpuSeconds.2026-12": "-3", "job.u1": "{bad"}
    ledger, problems = NamespaceLedger.from_data("team-a", data)
    assert ledger.spent(DEC) == 12.5 and ledger.jobs == {}
    assert len(problems) == 3 and all("kadapt-spend-team-a: dropped unreadable entry" in p for p in problems)


def test_the_advice_names_the_namespace_budget_and_the_reset() -> None:
    ledger = NamespaceLedger(namespace="team-a").book("uid-1", 60.0, 1.0, DEC).ledger
    decision = namespace_budget_decision(ledger, {"team-a": 50.0}, DEC)
    assert decision.exceeded and decision.used_ratio == pytest.approx(1.2)
    assert "raise namespaceBudgets.team-a" in decision.message
    assert "reset at 2027-01-01T00:00:00Z" in decision.message
    assert "spec.budget does not help" in decision.message
    assert not namespace_budget_decision(ledger, {"team-a": 50.0}, JAN).exceeded
    assert not namespace_budget_decision(ledger, {}, DEC).exceeded


def test_the_period_is_an_operator_setting() -> None:
    assert load_settings(env={}).namespace_budget_period == BudgetPeriod.MONTH
    assert load_settings(env={"KADAPT_NAMESPACE_BUDGET_PERIOD": "week"}).namespace_budget_period == BudgetPeriod.WEEK
