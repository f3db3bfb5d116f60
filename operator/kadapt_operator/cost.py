"""GPU cost accounting and budgets: pure functions, no Kubernetes client, no clock.

GPU seconds = sum over pods of running seconds x GPUs requested. The operator samples pods on
every poll, and each sample adds only the time since the previous one. What was already
counted is recorded per pod in a :class:`CostLedger` that lives in the job's status
(``status.cost``), never in memory: after an operator restart, or after polls were missed, the
next poll continues from the recorded marks, so nothing is counted twice and nothing is lost
as long as each pod is seen once after it ends.

Typical use in a poll handler::

    ledger = CostLedger.from_status(body.get("status", {}).get("cost"))
    pods = [p for p in (pod_interval(pod) for pod in listed_pods) if p is not None]
    result = accrue(ledger, pods, now=now)
    price = price_for(settings.gpu_prices, spec.resources.gpu_type)
    figures = cost_figures(result.ledger.gpu_seconds, price, eta_seconds=eta,
                           allocated_gpus=allocated_gpus(pods))
    patch.status["cost"] = {**result.ledger.to_status(), **figures.to_status(),
                            "currency": settings.currency, "gpuType": gpu_type}
    metrics.add_usage(usage_key, result.added_gpu_seconds, cost_of(result.added_gpu_seconds, price))
    decision = budget_decision(spec.budget, result.ledger.gpu_seconds, figures.cost_so_far)

Accrue before deleting pods (gang restart, suspension): time a pod runs after its last sample
and before it vanishes unseen cannot be known, and is not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from kadapt_operator.k8s import CONTROLLER_UID, TRAINER_CONTAINER, as_utc, format_time, parse_time, pod_gpus

#: Key of the fallback price in the operator's price table.
DEFAULT_PRICE_KEY = "default"
SECONDS_PER_HOUR = 3600.0

#: Condition type set when a budget stops a job (one of the contract's condition types).
CONDITION_BUDGET_EXCEEDED = "BudgetExceeded"
#: Reasons carried by the BudgetExceeded condition and the Event.
REASON_MAX_COST = "MaxCostReached"
REASON_MAX_GPU_HOURS = "MaxGPUHoursReached"
REASON_NAMESPACE_BUDGET = "NamespaceBudgetExceeded"
REASON_WITHIN_BUDGET = "WithinBudget"

#: Keys under ``status.cost`` that this module owns.
STATUS_GPU_SECONDS = "gpuSeconds"
STATUS_ACCOUNTED_UNTIL = "accountedUntil"


@dataclass(frozen=True)
class PodInterval:
    """One pod's GPU-holding interval, as far as it is known at sampling time.

    Attributes:
        key: unique for the pod's lifetime (its uid, or its name: Job pods get random suffixes,
            so a replacement pod never reuses a key).
        gpus: GPUs the pod requested (summed over its containers).
        started_at: when it began to run; None while still pending (nothing to count yet).
        finished_at: when it stopped; None while it runs (counted up to ``now``).
    """

    key: str
    gpus: int
    started_at: datetime | None
    finished_at: datetime | None = None

    @property
    def running(self) -> bool:
        """Started and not yet finished."""
        return self.started_at is not None and self.finished_at is None


def pod_interval(pod: Mapping[str, Any], *, container: str = TRAINER_CONTAINER) -> PodInterval | None:
    """Read a pod object (dict as the API returns it) into a :class:`PodInterval`.

    The interval runs from the trainer container's start (``state.running.startedAt`` or
    ``state.terminated.startedAt``) to its end (``state.terminated.finishedAt``). When the
    container status is missing, a pod in phase Running counts from ``status.startTime``.
    A pod that is Succeeded/Failed without a termination time ends at its ``startTime`` plus
    nothing (it is not guessed). Returns None for a pod without a name or uid.
    """
    meta = pod.get("metadata", {}) or {}
    key = meta.get("uid") or meta.get("name")
    if not key:
        return None
    status = pod.get("status", {}) or {}
    statuses = status.get("containerStatuses", []) or []
    chosen = next((c for c in statuses if c.get("name") == container), statuses[0] if statuses else None)
    started: datetime | None = None
    finished: datetime | None = None
    if chosen is not None:
        state = chosen.get("state", {}) or {}
        if "running" in state:
            started = parse_time((state["running"] or {}).get("startedAt"))
        elif "terminated" in state:
            term = state["terminated"] or {}
            started = parse_time(term.get("startedAt"))
            finished = parse_time(term.get("finishedAt"))
    phase = status.get("phase")
    if started is None and phase == "Running":
        started = parse_time(status.get("startTime"))
    if started is not None and finished is None and phase in ("Succeeded", "Failed"):
        finished = started  # ended, and when is unknown: count nothing more than already counted
    return PodInterval(key=str(key), gpus=pod_gpus(pod), started_at=started, finished_at=finished)


PodT = TypeVar("PodT", bound=Mapping[str, Any])


def _owner_job_uid(pod: Mapping[str, Any]) -> str | None:
    meta = pod.get("metadata") or {}
    uid = (meta.get("labels") or {}).get(CONTROLLER_UID)
    if uid:
        return str(uid)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def billable_pods(pods: Iterable[PodT], *, own_jobs: Collection[str], accounted: Collection[str]) -> list[PodT]:
    """The pods whose GPU time belongs to this incarnation of the AdaptationJob.

    Pods are found by the job's name label, which a deleted and re-created job of the same
    name shares with its predecessor's lingering pods. Cost belongs to one incarnation (its
    uid): a pod counts when its Job is one this incarnation owns (``own_jobs``, Job uids), or
    when this incarnation has already been counting it (``accounted``: its ledger's pod keys,
    e.g. a pod of a gang deleted for a restart, still terminating).
    """
    out: list[PodT] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        key = str(meta.get("uid") or meta.get("name") or "")
        if _owner_job_uid(pod) in own_jobs or key in accounted:
            out.append(pod)
    return out


def allocated_gpus(pods: Iterable[PodInterval]) -> int:
    """GPUs held right now: the sum over running pods."""
    return sum(p.gpus for p in pods if p.running)


@dataclass(frozen=True)
class CostLedger:
    """What has been counted: total GPU seconds and, per live pod, the time counted up to.

    Persist it with :meth:`to_status` into ``status.cost`` and read it back with
    :meth:`from_status`; it holds no other state.
    """

    gpu_seconds: float = 0.0
    accounted_until: Mapping[str, datetime] = field(default_factory=dict)
    #: Pods whose mark in status could not be read: repaired to the next sample (see :func:`accrue`).
    unreadable: frozenset[str] = frozenset()
    #: One message per entry of status that could not be read (for a Warning Event).
    problems: tuple[str, ...] = ()

    @classmethod
    def from_status(cls, cost_status: Mapping[str, Any] | None) -> CostLedger:
        """Read ``status.cost`` (camelCase dict); missing or empty gives an empty ledger.

        Never raises: a malformed entry (a hand-edited timestamp, a total that is not a number)
        would otherwise fail every poll of the job for good. An unreadable pod mark is kept in
        ``unreadable`` and repaired by the next :func:`accrue` (the pod's time up to that sample
        counts as already counted: at most one poll interval is lost, where dropping the mark
        would count the pod's whole life again); an unreadable total starts again at zero.
        Each repair is named in ``problems``.
        """
        if not cost_status:
            return cls()
        problems: list[str] = []
        marks_raw = cost_status.get(STATUS_ACCOUNTED_UNTIL) or {}
        if not isinstance(marks_raw, Mapping):
            problems.append(f"status.cost.{STATUS_ACCOUNTED_UNTIL} is not a map ({marks_raw!r}); replaced")
            marks_raw = {}
        marks: dict[str, datetime] = {}
        unreadable: set[str] = set()
        for key, value in marks_raw.items():
            try:
                ts = parse_time(value)
            except (TypeError, ValueError, AttributeError):
                unreadable.add(str(key))
                problems.append(
                    f"status.cost.{STATUS_ACCOUNTED_UNTIL}.{key}: {value!r} is not an RFC 3339 time; "
                    "repaired to the next sample"
                )
                continue
            if ts is not None:
                marks[str(key)] = ts
        raw_total = cost_status.get(STATUS_GPU_SECONDS) or 0.0
        try:
            total = float(raw_total)
            if not math.isfinite(total) or total < 0:
                raise ValueError(raw_total)
        except (TypeError, ValueError):
            problems.append(f"status.cost.{STATUS_GPU_SECONDS}: {raw_total!r} is not a number >= 0; reset to 0")
            total = 0.0
        return cls(gpu_seconds=total, accounted_until=marks, unreadable=frozenset(unreadable),
                   problems=tuple(problems))

    def to_status(self) -> dict[str, Any]:
        """The ledger's part of ``status.cost``: ``gpuSeconds`` and ``accountedUntil``.

        ``accountedUntil`` maps pod key -> RFC 3339 time. Because a merge patch merges maps,
        write it with the marks of pods that are gone set to None (see :func:`status_patch`).
        """
        return {
            STATUS_GPU_SECONDS: self.gpu_seconds,
            STATUS_ACCOUNTED_UNTIL: {k: format_time(v) for k, v in sorted(self.accounted_until.items())},
        }


@dataclass(frozen=True)
class Accrual:
    """Result of one sample: the new ledger, what it added, what it gave back, pods gone.

    ``added_gpu_seconds`` (>= 0) is newly counted time: add it to the fleet counters.
    ``corrected_gpu_seconds`` (<= 0) gives back time counted past a pod's reported end (the
    operator sampled a running pod after its container had in fact ended; container times are
    reported to the second). The ledger includes both, so a finished pod counts exactly
    ``(finishedAt - startedAt) x GPUs``; counters only ever increase and may keep that excess
    (under a second per pod).
    """

    ledger: CostLedger
    added_gpu_seconds: float
    dropped: tuple[str, ...] = ()
    corrected_gpu_seconds: float = 0.0

    def status_patch(self) -> dict[str, Any]:
        """``status.cost`` merge-patch fragment: new totals, and None for marks to delete."""
        out = self.ledger.to_status()
        marks: dict[str, Any] = dict(out[STATUS_ACCOUNTED_UNTIL])
        for key in self.dropped:
            marks[key] = None
        out[STATUS_ACCOUNTED_UNTIL] = marks
        return out


def accrue(ledger: CostLedger, pods: Iterable[PodInterval], now: datetime) -> Accrual:
    """Add the GPU time each pod ran since it was last counted, up to ``now``.

    For each pod the counted window is ``[max(started_at, mark), min(finished_at or now, now)]``.
    Calling it again with the same pods and ``now`` adds nothing; calling it after a gap (missed
    polls, an operator restart with the ledger read back from status) adds exactly the gap.
    When a finished pod turns out to have been counted past its reported end, the excess is
    given back, so a pod seen once after it ends counts exactly its reported running time.
    Marks of pods no longer listed are dropped (pod keys are never reused), which keeps the
    ledger as small as the live gang.

    Args:
        ledger: the ledger read from the job's status.
        pods: every pod of the job that still exists (pending ones included or not).
        now: the sampling time (operator clock, UTC).
    """
    now = as_utc(now)
    marks: dict[str, datetime] = dict(ledger.accounted_until)
    added = 0.0
    corrected = 0.0
    seen: set[str] = set()
    for pod in pods:
        seen.add(pod.key)
        if pod.started_at is None:
            continue
        start = as_utc(pod.started_at)
        if pod.key in ledger.unreadable and pod.key not in marks:
            # Repair an unreadable mark: what ran up to now counts as counted (see from_status).
            marks[pod.key] = max(min(as_utc(pod.finished_at), now) if pod.finished_at is not None else now, start)
            continue
        mark = marks.get(pod.key)
        if pod.finished_at is not None and mark is not None:
            finished = max(as_utc(pod.finished_at), start)
            if finished < mark:
                corrected -= (mark - finished).total_seconds() * pod.gpus
                marks[pod.key] = finished
                continue
        end = as_utc(pod.finished_at) if pod.finished_at is not None else now
        end = min(end, now)
        begin = max(start, mark) if mark is not None else start
        if end > begin:
            added += (end - begin).total_seconds() * pod.gpus
            marks[pod.key] = end
        elif mark is None:
            marks[pod.key] = begin
    dropped = tuple(sorted(k for k in marks if k not in seen))
    for key in dropped:
        del marks[key]
    return Accrual(
        ledger=CostLedger(gpu_seconds=max(ledger.gpu_seconds + added + corrected, 0.0), accounted_until=marks),
        added_gpu_seconds=added,
        dropped=dropped,
        corrected_gpu_seconds=corrected,
    )


class PriceTable(Protocol):
    """Anything with the operator settings' ``gpu_prices`` (per GPU-hour, ``default`` required)."""

    @property
    def gpu_prices(self) -> Mapping[str, float]: ...


def price_for(prices: Mapping[str, float] | PriceTable, gpu_type: str | None) -> float:
    """Price per GPU-hour of ``gpu_type``, falling back to the table's ``default``.

    Accepts the settings object itself or its ``gpu_prices`` mapping.

    Raises:
        ValueError: when neither the type nor ``default`` is priced.
    """
    table: Mapping[str, float] = prices if isinstance(prices, Mapping) else prices.gpu_prices
    if gpu_type and gpu_type in table:
        return float(table[gpu_type])
    if DEFAULT_PRICE_KEY in table:
        return float(table[DEFAULT_PRICE_KEY])
    raise ValueError(
        f"gpu_prices has no price for {gpu_type!r} and no {DEFAULT_PRICE_KEY!r} entry; "
        f"add gpuPrices.{DEFAULT_PRICE_KEY} to the operator config"
    )


#: Metric label value of every GPU type the price table does not list.
OTHER_GPU_TYPE = "other"
#: Condition type and Event reason for a job whose GPU type the price table does not list.
CONDITION_GPU_TYPE_KNOWN = "GPUTypeKnown"
REASON_UNKNOWN_GPU_TYPE = "UnknownGPUType"


def _table(prices: Mapping[str, float] | PriceTable) -> Mapping[str, float]:
    return prices if isinstance(prices, Mapping) else prices.gpu_prices


def is_priced(prices: Mapping[str, float] | PriceTable, gpu_type: str) -> bool:
    """Whether ``gpu_type`` has its own price (``default`` itself counts as listed).

    An unlisted type is priced at ``default`` silently; the operator warns about it, since a
    typo (``nvidia-a10O``) would otherwise bill at the wrong price unnoticed.
    """
    return gpu_type in _table(prices)


def gpu_type_label(prices: Mapping[str, float] | PriceTable, gpu_type: str) -> str:
    """The ``gpu_type`` metric label: a key of the price table, or ``other``.

    ``spec.resources.gpuType`` is free text written by tenants. Used as a label as is, every
    distinct value would become a series that is never deleted (fleet counters outlive jobs);
    bounding it to the platform's price table keeps the label set as small as that table.
    """
    return gpu_type if is_priced(prices, gpu_type) else OTHER_GPU_TYPE


def unknown_gpu_type_message(prices: Mapping[str, float] | PriceTable, gpu_type: str) -> str:
    """The condition and Event message for an unlisted GPU type: what happens and what to change."""
    table = _table(prices)
    known = ", ".join(sorted(k for k in table if k != DEFAULT_PRICE_KEY)) or "none besides default"
    default = table.get(DEFAULT_PRICE_KEY)
    priced = f"priced at the default {default:g} per GPU-hour" if default is not None else "not priced"
    return (
        f"spec.resources.gpuType {gpu_type!r} is not in the operator's price table (known: {known}); it is "
        f"{priced} and counted as {OTHER_GPU_TYPE!r} in metrics; use a listed type, or ask the platform "
        f"team to add gpuPrices.{gpu_type} to the operator config"
    )


def cost_of(gpu_seconds: float, price_per_gpu_hour: float) -> float:
    """Money for ``gpu_seconds`` at ``price_per_gpu_hour``."""
    return gpu_seconds / SECONDS_PER_HOUR * price_per_gpu_hour


def cost_so_far(ledger: CostLedger, price_per_gpu_hour: float) -> float:
    """Money spent so far by the job whose ledger this is."""
    return cost_of(ledger.gpu_seconds, price_per_gpu_hour)


def projected_cost(
    gpu_seconds: float, eta_seconds: float | None, allocated_gpus: int, price_per_gpu_hour: float
) -> float | None:
    """Projected cost at completion: spent so far plus the remaining ETA at the current allocation.

    Returns None when the ETA is unknown (nothing sensible to project).
    """
    if eta_seconds is None or not math.isfinite(eta_seconds):
        return None
    remaining = max(eta_seconds, 0.0) * max(allocated_gpus, 0)
    return cost_of(gpu_seconds + remaining, price_per_gpu_hour)


@dataclass(frozen=True)
class CostFigures:
    """The money figures shown in status and metrics."""

    gpu_seconds: float
    cost_so_far: float
    projected_cost: float | None
    price_per_gpu_hour: float

    def to_status(self) -> dict[str, Any]:
        """camelCase keys of ``status.cost`` (as in ``kadapt_operator.api.Cost``)."""
        return {
            "gpuSeconds": self.gpu_seconds,
            "costSoFar": self.cost_so_far,
            "projectedCost": self.projected_cost,
            "pricePerGPUHour": self.price_per_gpu_hour,
        }


def cost_figures(
    gpu_seconds: float, price_per_gpu_hour: float, *, eta_seconds: float | None, allocated_gpus: int
) -> CostFigures:
    """Cost so far and projected cost from the ledger total, the ETA and the current allocation."""
    return CostFigures(
        gpu_seconds=gpu_seconds,
        cost_so_far=cost_of(gpu_seconds, price_per_gpu_hour),
        projected_cost=projected_cost(gpu_seconds, eta_seconds, allocated_gpus, price_per_gpu_hour),
        price_per_gpu_hour=price_per_gpu_hour,
    )


class BudgetLike(Protocol):
    """``BudgetSpec`` or anything with its two optional limits."""

    @property
    def max_cost(self) -> float | None: ...

    @property
    def max_gpu_hours(self) -> float | None: ...


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a limit is reached, which one (``reason``) and a message for the condition/Event."""

    exceeded: bool
    reason: str
    message: str
    #: The largest share of a limit used (cost/maxCost, hours/maxGPUHours); None without limits.
    used_ratio: float | None = None


def budget_decision(
    budget: BudgetLike | None,
    gpu_seconds: float,
    cost: float,
    *,
    currency: str = "USD",
    headroom_gpu_seconds: float = 0.0,
    price_per_gpu_hour: float = 0.0,
) -> BudgetDecision:
    """Decide whether a job has reached (or would pass before the next check) its budget.

    A limit is reached when the spend, plus ``headroom_gpu_seconds`` (GPU time expected before
    the operator looks again, e.g. poll interval x allocated GPUs), is at or above it. A job
    whose limits are no longer reached (the user raised them) gets ``exceeded=False`` and can
    be resumed.
    """
    if budget is None or (budget.max_cost is None and budget.max_gpu_hours is None):
        return BudgetDecision(False, REASON_WITHIN_BUDGET, "no budget set", None)
    ratios: list[float] = []
    future_seconds = gpu_seconds + max(headroom_gpu_seconds, 0.0)
    future_cost = cost + cost_of(max(headroom_gpu_seconds, 0.0), price_per_gpu_hour)
    if budget.max_gpu_hours is not None:
        hours = gpu_seconds / SECONDS_PER_HOUR
        ratios.append(hours / budget.max_gpu_hours)
        if future_seconds / SECONDS_PER_HOUR >= budget.max_gpu_hours:
            return BudgetDecision(
                True,
                REASON_MAX_GPU_HOURS,
                f"used {hours:.4f} GPU-hours of spec.budget.maxGPUHours {budget.max_gpu_hours:g}; "
                "the job is suspended with its checkpoint kept; raise spec.budget.maxGPUHours to resume",
                max(ratios),
            )
    if budget.max_cost is not None:
        ratios.append(cost / budget.max_cost)
        if future_cost >= budget.max_cost:
            return BudgetDecision(
                True,
                REASON_MAX_COST,
                f"spent {cost:.4f} {currency} of spec.budget.maxCost {budget.max_cost:g} {currency}; "
                "the job is suspended with its checkpoint kept; raise spec.budget.maxCost to resume",
                max(ratios),
            )
    return BudgetDecision(False, REASON_WITHIN_BUDGET, "within budget", max(ratios))
