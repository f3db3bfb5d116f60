"""GPU-second accounting from simulated pod timelines, prices, projections and budgets.

The timelines are the ones an operator sees: pods listed on each poll, with their start and
end times as the kubelet reports them. Every poll re-reads the ledger from a JSON copy of the
job's status (what an operator restart does), so in-memory state cannot hide a bug.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadapt_operator.api import AdaptationJobStatus
from kadapt_operator.cost import (
    CONDITION_BUDGET_EXCEEDED,
    REASON_MAX_COST,
    REASON_MAX_GPU_HOURS,
    REASON_WITHIN_BUDGET,
    CostLedger,
    PodInterval,
    accrue,
    allocated_gpus,
    budget_decision,
    cost_figures,
    cost_of,
    cost_so_far,
    pod_interval,
    price_for,
    projected_cost,
)
from kadapt_operator.k8s import format_time, parse_time, pod_gpus
from kadapt_operator.settings import OperatorSettings
from kadapt_trainer.config import BudgetSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class PodLife:
    """One pod's whole life in a simulation (seconds after T0)."""

    key: str
    gpus: int
    created: float
    started: float | None
    finished: float | None
    deleted: float | None = None

    def seen_at(self, t: float) -> PodInterval | None:
        """What a poll at ``t`` lists for this pod (None: not in the listing)."""
        if t < self.created or (self.deleted is not None and t >= self.deleted):
            return None
        started = at(self.started) if self.started is not None and self.started <= t else None
        finished = at(self.finished) if self.finished is not None and self.finished <= t else None
        return PodInterval(self.key, self.gpus, started, finished)

    def gpu_seconds(self) -> float:
        """Hand computation: (end - start) x GPUs."""
        if self.started is None or self.finished is None:
            return 0.0
        return (self.finished - self.started) * self.gpus


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies kopf's status patches."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, dict):
            out[key] = merge_patch({}, value)
        else:
            out[key] = value
    return out


class StoredJob:
    """A job's status as the API server stores it: JSON text, patched by merge patches."""

    def __init__(self) -> None:
        self.text = json.dumps({})

    def poll(self, pods: Iterable[PodInterval], now: datetime) -> float:
        """One operator poll by a fresh operator: read status, accrue, patch. Returns what it added."""
        status = json.loads(self.text)
        result = accrue(CostLedger.from_status(status.get("cost")), list(pods), now)
        self.text = json.dumps(merge_patch(status, {"cost": result.status_patch()}))
        return result.added_gpu_seconds

    @property
    def gpu_seconds(self) -> float:
        return float(json.loads(self.text).get("cost", {}).get("gpuSeconds", 0.0))

    @property
    def marks(self) -> dict[str, str]:
        return dict(json.loads(self.text).get("cost", {}).get("accountedUntil", {}))


def run_polls(lives: Sequence[PodLife], times: Iterable[float], job: StoredJob | None = None) -> StoredJob:
    job = job or StoredJob()
    for t in sorted(times):
        listed = [p for p in (life.seen_at(t) for life in lives) if p is not None]
        job.poll(listed, at(t))
    return job


# One job, two workers x 4 GPUs: a worker fails (gang restart), the job is suspended, then
# resumed and runs to success. Times in seconds after T0.
GANG = [
    # first gang: a1 fails at 100, the operator stops a0 (ends 103), both deleted at 110
    PodLife("a0", 4, created=0, started=10, finished=103, deleted=110),
    PodLife("a1", 4, created=0, started=12, finished=100, deleted=110),
    # restarted gang: suspended at 400, checkpoint written, containers end at 405/407, deleted at 425
    PodLife("b0", 4, created=120, started=130, finished=405, deleted=425),
    PodLife("b1", 4, created=120, started=131, finished=407, deleted=425),
    # resumed gang: runs to success; finished pods stay listed
    PodLife("c0", 4, created=990, started=1000, finished=1500),
    PodLife("c1", 4, created=990, started=1002, finished=1499),
]
# (103-10)*4 + (100-12)*4 + (405-130)*4 + (407-131)*4 + (1500-1000)*4 + (1499-1002)*4
HAND_GPU_SECONDS = 372 + 352 + 1100 + 1104 + 2000 + 1988


def test_hand_computation_matches_the_simulation_lives() -> None:
    assert sum(p.gpu_seconds() for p in GANG) == HAND_GPU_SECONDS == 6916


def test_regular_polls_give_the_hand_computation_to_the_second() -> None:
    job = run_polls(GANG, range(0, 1700, 15))
    assert job.gpu_seconds == HAND_GPU_SECONDS
    assert job.marks.keys() == {"c0", "c1"}  # marks of deleted pods are dropped


def test_missed_polls_and_operator_downtime_lose_nothing() -> None:
    # The operator is down from 140 to 395 and from 1010 to 1600 (one poll at 1620 afterwards),
    # and polls at odd times in between; each pod is listed once after it ends.
    times = [0, 11, 50, 104, 125, 139, 395, 406, 408, 1001, 1005, 1620]
    job = run_polls(GANG, times)
    assert job.gpu_seconds == HAND_GPU_SECONDS


def test_ledger_survives_operator_restart_mid_run() -> None:
    # Operator A polls until 700 and dies; operator B (nothing in memory) reads the stored status.
    first = run_polls(GANG, range(0, 700, 15))
    counted_by_a = first.gpu_seconds
    assert counted_by_a == 372 + 352 + 1100 + 1104
    restarted = StoredJob()
    restarted.text = first.text  # the only thing that survives is the object in the API server
    run_polls(GANG, range(700, 1700, 20), restarted)
    assert restarted.gpu_seconds == HAND_GPU_SECONDS


def test_repeating_a_poll_adds_nothing() -> None:
    job = StoredJob()
    pods = [p for p in (life.seen_at(300) for life in GANG) if p is not None]
    first = job.poll(pods, at(300))
    again = job.poll(pods, at(300))
    assert first == (300 - 130) * 4 + (300 - 131) * 4
    assert again == 0.0


def test_clock_going_backwards_never_subtracts() -> None:
    job = StoredJob()
    pods = [PodInterval("p", 2, at(0), None)]
    job.poll(pods, at(100))
    assert job.poll(pods, at(90)) == 0.0
    assert job.gpu_seconds == 200
    job.poll(pods, at(110))
    assert job.gpu_seconds == 220


def test_unseen_tail_of_a_deleted_pod_is_not_guessed() -> None:
    # Last seen running at 300, deleted at 425 without a poll in between: 300..405 is unknown.
    job = run_polls(GANG[2:4], [130, 300, 430])
    assert job.gpu_seconds == (300 - 130) * 4 + (300 - 131) * 4
    assert job.marks == {}


def test_pending_pods_cost_nothing_and_cpu_pods_cost_nothing() -> None:
    job = StoredJob()
    assert job.poll([PodInterval("pending", 8, None, None), PodInterval("cpu", 0, at(0), None)], at(60)) == 0
    assert job.gpu_seconds == 0


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    lives=st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 500), st.integers(0, 500), st.integers(1, 100)),
        min_size=1,
        max_size=6,
    ),
)
def test_any_poll_schedule_gives_the_exact_total(data: st.DataObject, lives: list[tuple[int, int, int, int]]) -> None:
    """Property: polls at any times, as long as each pod is listed once after it ends, count exactly."""
    pods = [
        PodLife(f"p{i}", gpus, created=start, started=start, finished=start + length, deleted=start + length + grace)
        for i, (gpus, start, length, grace) in enumerate(lives)
    ]
    times = set(data.draw(st.lists(st.integers(0, 1200), max_size=40)))
    for p in pods:
        assert p.finished is not None and p.deleted is not None
        times.add(data.draw(st.integers(int(p.finished), int(p.deleted) - 1)))
    job = run_polls(pods, times)
    assert job.gpu_seconds == sum(p.gpu_seconds() for p in pods)


# --- reading pods ---------------------------------------------------------------------------


def pod(name: str, *, state: dict[str, Any] | None, phase: str = "Running", gpus: Any = "2",
        start_time: str | None = "2026-01-01T00:00:05Z") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if start_time:
        status["startTime"] = start_time
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    return {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
        "status": status,
    }


def test_pod_interval_reads_running_and_terminated_containers() -> None:
    running = pod_interval(pod("r", state={"running": {"startedAt": "2026-01-01T00:00:10Z"}}))
    assert running == PodInterval("uid-r", 2, at(10), None)
    assert running is not None and running.running
    done = pod_interval(
        pod("d", phase="Succeeded",
            state={"terminated": {"startedAt": "2026-01-01T00:00:10Z", "finishedAt": "2026-01-01T00:01:10Z",
                                  "exitCode": 0}})
    )
    assert done == PodInterval("uid-d", 2, at(10), at(70))
    assert allocated_gpus([p for p in (running, done) if p is not None]) == 2


def test_pod_interval_pending_and_fallbacks() -> None:
    waiting = pod_interval(pod("w", phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}))
    assert waiting == PodInterval("uid-w", 2, None, None)
    no_statuses = pod_interval(pod("n", state=None))
    assert no_statuses == PodInterval("uid-n", 2, at(5), None)
    # ended with no container times at all: nothing beyond what was already counted
    lost = pod_interval(pod("l", phase="Failed", state=None))
    assert lost == PodInterval("uid-l", 2, None, None)
    ended = pod_interval(pod("e", phase="Failed", state={"running": {"startedAt": "2026-01-01T00:00:10Z"}}))
    assert ended == PodInterval("uid-e", 2, at(10), at(10))
    assert pod_interval({"metadata": {}}) is None


def test_pod_gpus_sums_containers_and_prefers_limits() -> None:
    body = {
        "spec": {
            "containers": [
                {"resources": {"limits": {"nvidia.com/gpu": 2}, "requests": {"nvidia.com/gpu": 1}}},
                {"resources": {"requests": {"nvidia.com/gpu": "1"}}},
                {"resources": {}},
            ]
        }
    }
    assert pod_gpus(body) == 3


def test_time_round_trip() -> None:
    assert parse_time("2026-01-01T00:00:10Z") == at(10)
    assert format_time(at(10)) == "2026-01-01T00:00:10Z"
    assert parse_time(format_time(at(10.25))) == at(10.25)
    assert parse_time(None) is None


# --- prices and projections ----------------------------------------------------------------


def test_price_for_uses_the_type_then_default() -> None:
    table = {"default": 2.0, "a100": 3.5}
    assert price_for(table, "a100") == 3.5
    assert price_for(table, "h100") == 2.0
    assert price_for(table, None) == 2.0
    settings_obj = OperatorSettings(gpu_prices={"default": 1.25, "h100": 9.0})
    assert price_for(settings_obj, "h100") == 9.0
    with pytest.raises(ValueError, match="default"):
        price_for({"a100": 3.0}, "h100")


def test_cost_and_projection() -> None:
    ledger = CostLedger(gpu_seconds=7200.0)
    assert cost_so_far(ledger, 2.5) == 5.0
    assert cost_of(1800, 4.0) == 2.0
    # 2 GPU-hours spent, 30 minutes left on 4 GPUs = 2 more GPU-hours, at 2.5/hour
    assert projected_cost(7200.0, 1800.0, 4, 2.5) == 10.0
    assert projected_cost(7200.0, None, 4, 2.5) is None
    assert projected_cost(7200.0, float("nan"), 4, 2.5) is None
    figures = cost_figures(7200.0, 2.5, eta_seconds=1800.0, allocated_gpus=4)
    status = {"cost": {**figures.to_status(), "currency": "EUR", "gpuType": "a100",
                       **CostLedger(7200.0, {"p": at(3)}).to_status()}}
    parsed = AdaptationJobStatus.model_validate(status).cost
    assert (parsed.gpu_seconds, parsed.cost_so_far, parsed.projected_cost, parsed.price_per_gpu_hour) == (
        7200.0, 5.0, 10.0, 2.5,
    )


# --- budgets --------------------------------------------------------------------------------


def test_no_budget_never_exceeds() -> None:
    d = budget_decision(BudgetSpec(), 1e9, 1e9)
    assert not d.exceeded and d.reason == REASON_WITHIN_BUDGET and d.used_ratio is None


def test_max_cost_and_gpu_hours() -> None:
    budget = BudgetSpec(max_cost=10.0, max_gpu_hours=100.0)
    under = budget_decision(budget, 3600.0, 9.0, currency="EUR")
    assert not under.exceeded and under.used_ratio == pytest.approx(0.9)
    over = budget_decision(budget, 3600.0, 10.0, currency="EUR")
    assert over.exceeded and over.reason == REASON_MAX_COST
    assert "spec.budget.maxCost" in over.message and "EUR" in over.message
    hours = budget_decision(BudgetSpec(max_gpu_hours=1.0), 3600.0, 0.0)
    assert hours.exceeded and hours.reason == REASON_MAX_GPU_HOURS and "maxGPUHours" in hours.message


def test_headroom_suspends_before_the_budget_is_passed() -> None:
    budget = BudgetSpec(max_cost=1.0)
    # 0.9 spent; the next poll (15 s x 4 GPUs at 36/hour = 0.6) would pass 1.0
    assert not budget_decision(budget, 90.0, 0.9).exceeded
    early = budget_decision(budget, 90.0, 0.9, headroom_gpu_seconds=60.0, price_per_gpu_hour=36.0)
    assert early.exceeded and early.reason == REASON_MAX_COST


def test_tiny_budget_suspends_then_raising_it_resumes_with_the_ledger_intact() -> None:
    """The operator's budget loop, at the pure level: accrue -> decide -> suspend -> raise -> resume."""
    price = 36.0  # per GPU-hour: 1 GPU-second = 0.01
    budget = BudgetSpec(max_cost=1.0)
    job = StoredJob()
    first_gang = PodLife("g1", 1, created=0, started=0, finished=None)
    suspended_at = None
    for t in range(0, 300, 10):
        listed = [p for p in [first_gang.seen_at(t)] if p is not None]
        job.poll(listed, at(t))
        decision = budget_decision(budget, job.gpu_seconds, job.gpu_seconds / 3600 * price)
        if decision.exceeded:
            suspended_at = t
            break
    assert suspended_at == 100  # 100 GPU-seconds = 1.00 spent
    assert CONDITION_BUDGET_EXCEEDED == "BudgetExceeded"
    # The gang stops on SIGTERM (checkpoint), container ends 3 s later; the operator sees it.
    stopped = PodLife("g1", 1, created=0, started=0, finished=103, deleted=120)
    run_polls([stopped], [110], job)
    assert job.gpu_seconds == 103
    still = budget_decision(budget, job.gpu_seconds, job.gpu_seconds / 3600 * price)
    assert still.exceeded
    # Raising the budget: no longer exceeded, the job resumes; the new gang's time adds on.
    raised = BudgetSpec(max_cost=5.0)
    assert not budget_decision(raised, job.gpu_seconds, job.gpu_seconds / 3600 * price).exceeded
    resumed = PodLife("g2", 1, created=200, started=205, finished=305)
    run_polls([resumed], [210, 250, 310], job)
    assert job.gpu_seconds == 103 + 100
    assert not budget_decision(raised, job.gpu_seconds, job.gpu_seconds / 3600 * price).exceeded


def test_crd_keeps_the_ledger_in_status() -> None:
    """A real API server prunes status fields its schema does not name: the ledger must be named.

    Without ``status.cost.accountedUntil`` in the CRD, every poll after the first would count
    each pod again from its start (the marks vanish on write).
    """
    from kadapt_operator.crd import build_crd

    crd = build_crd()
    version = crd["spec"]["versions"][0]
    cost_schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["cost"]
    props = cost_schema.get("properties", {})
    assert cost_schema.get("x-kubernetes-preserve-unknown-fields") or "accountedUntil" in props, (
        "status.cost.accountedUntil is missing from the CRD: add to kadapt_operator.api.Cost "
        "`accounted_until: dict[str, str] = Field(default_factory=dict, alias=\"accountedUntil\")`"
    )
    if "accountedUntil" in props:
        marks = props["accountedUntil"]
        assert marks.get("type") == "object"
        assert marks.get("additionalProperties", {}).get("type") == "string" or marks.get(
            "x-kubernetes-preserve-unknown-fields"
        )
    for name in ("gpuSeconds", "costSoFar", "projectedCost", "pricePerGPUHour", "currency", "gpuType"):
        assert name in props, name


def test_time_counted_past_a_reported_end_is_given_back() -> None:
    """Sampled running at 52.6 s, then reported ended at 52 s (container times are whole seconds)."""
    job = StoredJob()
    job.poll([PodInterval("p", 2, at(0), None)], at(52.6))
    assert job.gpu_seconds == pytest.approx(105.2)
    status = json.loads(job.text)
    result = accrue(CostLedger.from_status(status["cost"]), [PodInterval("p", 2, at(0), at(52))], at(53))
    assert result.added_gpu_seconds == 0.0
    assert result.corrected_gpu_seconds == pytest.approx(-1.2)
    assert result.ledger.gpu_seconds == 104.0
    job.text = json.dumps(merge_patch(status, {"cost": result.status_patch()}))
    assert job.poll([PodInterval("p", 2, at(0), at(52))], at(60)) == 0.0
    assert job.gpu_seconds == 104.0
