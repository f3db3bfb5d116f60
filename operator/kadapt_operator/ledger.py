"""The per-namespace spend ledger: what a namespace has spent this budget period, persistently.

A namespace budget (``namespaceBudgets.<namespace>`` in the operator settings) is a cap on what
the namespace's AdaptationJobs spend together. Summing ``status.cost`` over the jobs that still
exist is not a cap: deleting a job, or its TTL, would hand its spend back. So the spend is
booked into a ledger that outlives the jobs and the operator:

* **Where.** One ConfigMap per budgeted namespace, ``kadapt-spend-<namespace>``, in the
  *operator's* namespace (``kadapt-system``). Tenants who may edit their own namespace cannot
  write there; the operator needs get/create/patch on ConfigMaps in its own namespace only
  (``permissions.py``, the chart's ``rbac.yaml``). Only the active (peered) replica writes it.
* **What.** Per budget period (calendar month by default, UTC), the money and GPU seconds
  booked; and per job *uid* (one incarnation; a re-created job of the same name is another),
  the totals already booked, so that booking is idempotent: replaying a job's running total
  after a restart, a missed poll or a conflict books nothing twice.
* **Periods.** ``month`` (``2026-12``), ``week`` (ISO, ``2026-W49``), ``day`` (``2026-12-01``)
  or ``total`` (never resets). A new period starts at zero: that is the reset. The last
  :data:`KEEP_PERIODS` periods stay in the ledger for reference.

``BudgetPeriod`` (re-exported here) is the operator setting ``namespaceBudgetPeriod``.

Pure: no client, no clock (``now`` is passed). The runtime reads the ConfigMap, calls
:meth:`NamespaceLedger.book` for each job's new totals, writes :func:`data_patch` back with the
ConfigMap's ``resourceVersion`` (a conflict re-reads and re-books, which is safe), and stops the
namespace's running jobs when :func:`namespace_budget_decision` says the budget is spent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kadapt_operator.cost import REASON_NAMESPACE_BUDGET, REASON_WITHIN_BUDGET, BudgetDecision
from kadapt_operator.k8s import format_time
from kadapt_operator.settings import BudgetPeriod

#: Prefix of the ledger ConfigMaps' names (``kadapt-spend-<namespace>``).
LEDGER_PREFIX = "kadapt-spend-"
#: Label naming the namespace whose spend a ledger ConfigMap holds.
LABEL_LEDGER_NAMESPACE = "kadapt.dev/ledger-namespace"
#: Periods kept in a ledger (the current one and the twelve before it, for a month: a year).
KEEP_PERIODS = 13

_SPEND = "spend."
_GPU_SECONDS = "gpuSeconds."
_JOB = "job."


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def period_key(period: BudgetPeriod, now: datetime) -> str:
    """The key of the period that ``now`` falls in: ``2026-12``, ``2026-W49``, ``2026-12-01``, ``total``."""
    now = _utc(now)
    if period == BudgetPeriod.MONTH:
        return f"{now.year:04d}-{now.month:02d}"
    if period == BudgetPeriod.WEEK:
        year, week, _ = now.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if period == BudgetPeriod.DAY:
        return now.strftime("%Y-%m-%d")
    return "total"


def period_end(period: BudgetPeriod, now: datetime) -> datetime | None:
    """When the period that ``now`` falls in ends (the next reset); None for ``total``."""
    now = _utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == BudgetPeriod.MONTH:
        first = midnight.replace(day=1)
        if first.month == 12:
            return first.replace(year=first.year + 1, month=1)
        return first.replace(month=first.month + 1)
    if period == BudgetPeriod.WEEK:
        return midnight + timedelta(days=7 - now.weekday())
    if period == BudgetPeriod.DAY:
        return midnight + timedelta(days=1)
    return None


def ledger_name(namespace: str) -> str:
    """Name of the ConfigMap holding ``namespace``'s spend (a namespace name is at most 63 characters)."""
    return f"{LEDGER_PREFIX}{namespace}"


class Booked(BaseModel):
    """What one job incarnation (uid) has booked into the ledger so far: its running totals."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    cost: float = Field(default=0.0, ge=0)
    gpu_seconds: float = Field(default=0.0, ge=0, alias="gpuSeconds")


class Booking(BaseModel):
    """The result of :meth:`NamespaceLedger.book`: the new ledger and what was added now."""

    model_config = ConfigDict(frozen=True)

    ledger: NamespaceLedger
    added_cost: float
    added_gpu_seconds: float


class NamespaceLedger(BaseModel):
    """One namespace's spend per period, and per job uid the totals already booked."""

    model_config = ConfigDict(frozen=True)

    namespace: str = Field(min_length=1, max_length=63)
    period: BudgetPeriod = BudgetPeriod.MONTH
    spend: dict[str, float] = Field(default_factory=dict)
    gpu_seconds: dict[str, float] = Field(default_factory=dict)
    jobs: dict[str, Booked] = Field(default_factory=dict)

    def spent(self, now: datetime) -> float:
        """Money booked in the current period."""
        return self.spend.get(period_key(self.period, now), 0.0)

    def gpu_seconds_spent(self, now: datetime) -> float:
        """GPU seconds booked in the current period."""
        return self.gpu_seconds.get(period_key(self.period, now), 0.0)

    def book(self, uid: str, cost_total: float, gpu_seconds_total: float, now: datetime) -> Booking:
        """Book a job's running totals (``status.cost``): only what grew since its last booking.

        The growth lands in the current period. Totals that shrank (a price change, a sub-second
        correction of a finished pod) book nothing and keep the higher mark, so the same money is
        never booked twice; booking the same totals again adds nothing.
        """
        before = self.jobs.get(uid, Booked())
        add_cost = max(cost_total - before.cost, 0.0) if math.isfinite(cost_total) else 0.0
        add_seconds = max(gpu_seconds_total - before.gpu_seconds, 0.0) if math.isfinite(gpu_seconds_total) else 0.0
        if add_cost == 0.0 and add_seconds == 0.0 and uid in self.jobs:
            return Booking(ledger=self, added_cost=0.0, added_gpu_seconds=0.0)
        key = period_key(self.period, now)
        spend = dict(self.spend)
        seconds = dict(self.gpu_seconds)
        spend[key] = spend.get(key, 0.0) + add_cost
        seconds[key] = seconds.get(key, 0.0) + add_seconds
        jobs = {**self.jobs, uid: Booked(cost=before.cost + add_cost, gpu_seconds=before.gpu_seconds + add_seconds)}
        ledger = self.model_copy(update={"spend": _recent(spend), "gpu_seconds": _recent(seconds), "jobs": jobs})
        return Booking(ledger=ledger, added_cost=add_cost, added_gpu_seconds=add_seconds)

    def forget(self, live_uids: Iterable[str]) -> NamespaceLedger:
        """Drop the marks of jobs that no longer exist; their spend stays booked in its period.

        A uid is never reused, so a deleted job's mark is never needed again: a job re-created
        under the same name is a new incarnation that books from zero.
        """
        live = set(live_uids)
        kept = {uid: b for uid, b in self.jobs.items() if uid in live}
        return self if len(kept) == len(self.jobs) else self.model_copy(update={"jobs": kept})

    def to_data(self) -> dict[str, str]:
        """The ConfigMap's ``data``: one key per period and per job, so merge patches stay small."""
        data = {"namespace": self.namespace, "period": self.period.value}
        data.update({_SPEND + k: _number(v) for k, v in sorted(self.spend.items())})
        data.update({_GPU_SECONDS + k: _number(v) for k, v in sorted(self.gpu_seconds.items())})
        data.update(
            {_JOB + uid: b.model_dump_json(by_alias=True) for uid, b in sorted(self.jobs.items())}
        )
        return data

    @classmethod
    def from_data(
        cls, namespace: str, data: Mapping[str, Any] | None, period: BudgetPeriod = BudgetPeriod.MONTH
    ) -> tuple[NamespaceLedger, list[str]]:
        """Read a ledger ConfigMap's ``data``; entries that cannot be read are dropped and named.

        The ``period`` is the operator's setting, not the stored one: changing the setting starts
        counting in the new period's keys (old keys stay for reference). Returns the ledger and
        one message per dropped entry (for a Warning Event), so that one bad value never blocks
        the budget for good.
        """
        spend: dict[str, float] = {}
        seconds: dict[str, float] = {}
        jobs: dict[str, Booked] = {}
        problems: list[str] = []
        for key, raw in (data or {}).items():
            try:
                if key.startswith(_SPEND):
                    spend[key.removeprefix(_SPEND)] = _parse_number(raw)
                elif key.startswith(_GPU_SECONDS):
                    seconds[key.removeprefix(_GPU_SECONDS)] = _parse_number(raw)
                elif key.startswith(_JOB):
                    jobs[key.removeprefix(_JOB)] = Booked.model_validate(json.loads(str(raw)))
            except (ValueError, TypeError):
                problems.append(f"{ledger_name(namespace)}: dropped unreadable entry {key}={raw!r}")
        ledger = cls(namespace=namespace, period=period, spend=spend, gpu_seconds=seconds, jobs=jobs)
        return ledger, problems


Booking.model_rebuild()


class JobSpend(BaseModel):
    """One AdaptationJob incarnation's running totals, as its ``status.cost`` shows them."""

    model_config = ConfigDict(frozen=True)

    uid: str = Field(min_length=1)
    cost: float = 0.0
    gpu_seconds: float = 0.0


def book_jobs(
    ledger: NamespaceLedger,
    live: Iterable[JobSpend],
    departed: Iterable[JobSpend],
    now: datetime,
) -> NamespaceLedger:
    """Book a namespace's jobs into its ledger, then forget the jobs that are gone.

    ``live`` are the namespace's AdaptationJobs that exist now; ``departed`` the last known
    totals of jobs deleted since the previous booking (their final growth is booked too). A
    departed job whose mark the ledger no longer holds was forgotten already (a booking ran
    between its disappearance from the watch and its deletion event): booking it again would
    book its whole total a second time, so it is skipped, losing at most one poll's growth.
    """
    live = list(live)
    for job in live:
        ledger = ledger.book(job.uid, job.cost, job.gpu_seconds, now).ledger
    for job in departed:
        if job.uid in ledger.jobs:
            ledger = ledger.book(job.uid, job.cost, job.gpu_seconds, now).ledger
    return ledger.forget(job.uid for job in live)


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _parse_number(raw: Any) -> float:
    value = float(str(raw))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a finite amount >= 0: {raw!r}")
    return value


def _recent(by_period: dict[str, float]) -> dict[str, float]:
    """The newest :data:`KEEP_PERIODS` periods (the keys sort by time within a kind of period)."""
    keys = sorted(by_period)[-KEEP_PERIODS:]
    return {k: by_period[k] for k in keys}


def data_patch(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str | None]:
    """A merge patch of ConfigMap ``data`` from ``before`` to ``after`` (None deletes a key); {} if equal."""
    patch: dict[str, str | None] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return patch


def ledger_config_map(ledger: NamespaceLedger, operator_namespace: str) -> dict[str, Any]:
    """The ledger ConfigMap object, as created the first time a namespace books spend."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ledger_name(ledger.namespace),
            "namespace": operator_namespace,
            "labels": {
                "app.kubernetes.io/name": "kadapt",
                "app.kubernetes.io/component": "spend-ledger",
                "app.kubernetes.io/managed-by": "kadapt-operator",
                LABEL_LEDGER_NAMESPACE: ledger.namespace,
            },
        },
        "data": ledger.to_data(),
    }


def namespace_budget_decision(
    ledger: NamespaceLedger, budgets: Mapping[str, float], now: datetime, *, currency: str = "USD"
) -> BudgetDecision:
    """Whether ``ledger.namespace`` has spent its budget in the current period.

    The message is the advice a held job shows: the namespace's budget is what to raise (or
    the period's reset to wait for), not the job's own ``spec.budget``.
    """
    namespace = ledger.namespace
    limit = budgets.get(namespace)
    if limit is None:
        return BudgetDecision(False, REASON_WITHIN_BUDGET, f"namespace {namespace} has no budget", None)
    spent = ledger.spent(now)
    ratio = spent / limit if limit > 0 else math.inf
    if spent < limit:
        return BudgetDecision(False, REASON_WITHIN_BUDGET, "within the namespace budget", ratio)
    end = period_end(ledger.period, now)
    when = f"this {ledger.period.value} (until {format_time(end)})" if end else "in total"
    reset = f", or wait for the reset at {format_time(end)}" if end else ""
    return BudgetDecision(
        True,
        REASON_NAMESPACE_BUDGET,
        f"namespace {namespace} has spent {spent:.4f} {currency} of its budget {limit:g} {currency} {when}; "
        f"its jobs are suspended with their checkpoints kept and new ones wait; raise "
        f"namespaceBudgets.{namespace} in the operator config{reset} to resume (spec.budget does not help)",
        ratio,
    )
