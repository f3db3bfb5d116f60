"""The reconcile's pure decisions, table by table: budget, suspension, children, outcome, restart.

No kopf, no API server, no clock: each row is the observations one reconcile step makes
and the decision it must come to. Every branch of ``decide`` has a row.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadapt_operator import cost as costing
from kadapt_operator.api import AdaptationJobStatus, Condition
from kadapt_operator.runtime import decide
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.decide import ChildAction, Outcome, Trigger
from kadapt_operator.runtime.termination import Termination

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)

WITHIN = costing.BudgetDecision(False, costing.REASON_WITHIN_BUDGET, "within budget", 0.5)
NO_BUDGET = costing.BudgetDecision(False, costing.REASON_WITHIN_BUDGET, "no budget set", None)
OVER_COST = costing.BudgetDecision(True, costing.REASON_MAX_COST, "spent 5 of 4", 1.2)
NS_WITHIN = costing.BudgetDecision(False, costing.REASON_WITHIN_BUDGET, "within namespace budget", 0.1)
NS_OVER = costing.BudgetDecision(True, costing.REASON_NAMESPACE_BUDGET, "namespace over", 1.0)
HELD = Condition(type=st.BUDGET_EXCEEDED, status=st.TRUE, reason=costing.REASON_MAX_COST, message="held")
NS_HELD = Condition(
    type=st.BUDGET_EXCEEDED, status=st.TRUE, reason=costing.REASON_NAMESPACE_BUDGET, message="namespace over"
)
RELEASED = Condition(type=st.BUDGET_EXCEEDED, status=st.FALSE, reason=costing.REASON_WITHIN_BUDGET, message="ok")


def budget_inputs(**kw: Any) -> decide.BudgetInputs:
    base: dict[str, Any] = {
        "job_budget": NO_BUDGET,
        "namespace_budget": None,
        "held": None,
        "has_budget": False,
        "user_suspend": False,
        "trigger": Trigger.TICK,
    }
    return decide.BudgetInputs(**{**base, **kw})


BUDGET_ROWS = [
    # id, inputs, exceeded, reason of the decision, suspend reason, condition (status, reason) or None, newly
    ("no budget, nothing held", {}, False, costing.REASON_WITHIN_BUDGET, None, None, False),
    (
        "budget set and within it: BudgetExceeded=False is shown",
        {"job_budget": WITHIN, "has_budget": True},
        False,
        costing.REASON_WITHIN_BUDGET,
        None,
        (st.FALSE, costing.REASON_WITHIN_BUDGET),
        False,
    ),
    (
        "job budget reached: suspended, counted once",
        {"job_budget": OVER_COST, "has_budget": True},
        True,
        costing.REASON_MAX_COST,
        st.Reason.BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_MAX_COST),
        True,
    ),
    (
        "job budget still reached while held: not counted again",
        {"job_budget": OVER_COST, "has_budget": True, "held": HELD},
        True,
        costing.REASON_MAX_COST,
        st.Reason.BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_MAX_COST),
        False,
    ),
    (
        "namespace over budget holds a new job or stops a running one, its own reason on Suspended",
        {"namespace_budget": NS_OVER},
        True,
        costing.REASON_NAMESPACE_BUDGET,
        st.Reason.NAMESPACE_BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_NAMESPACE_BUDGET),
        True,
    ),
    (
        "a namespace stop is lifted by a tick once the period resets (nothing in the spec lifts it)",
        {"namespace_budget": NS_WITHIN, "held": NS_HELD, "trigger": Trigger.TICK},
        False,
        costing.REASON_WITHIN_BUDGET,
        None,
        (st.FALSE, costing.REASON_WITHIN_BUDGET),
        False,
    ),
    (
        "a namespace stop is lifted once the namespace has no budget any more",
        {"held": NS_HELD, "trigger": Trigger.CHILDREN},
        False,
        costing.REASON_WITHIN_BUDGET,
        None,
        (st.FALSE, costing.REASON_WITHIN_BUDGET),
        False,
    ),
    (
        "a namespace stop is kept while the ledger cannot be read, even on a spec change",
        {"held": NS_HELD, "namespace_unknown": True, "trigger": Trigger.SPEC},
        True,
        costing.REASON_NAMESPACE_BUDGET,
        st.Reason.NAMESPACE_BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_NAMESPACE_BUDGET),
        False,
    ),
    (
        "a job-budget stop is not lifted by the namespace's reset on a tick",
        {"job_budget": WITHIN, "has_budget": True, "namespace_budget": NS_WITHIN, "held": HELD},
        True,
        costing.REASON_MAX_COST,
        st.Reason.BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_MAX_COST),
        False,
    ),
    (
        "namespace within budget: its verdict is shown only once a condition exists",
        {"namespace_budget": NS_WITHIN},
        False,
        costing.REASON_WITHIN_BUDGET,
        None,
        None,
        False,
    ),
    (
        "job budget wins over the namespace's",
        {"job_budget": OVER_COST, "namespace_budget": NS_OVER, "has_budget": True},
        True,
        costing.REASON_MAX_COST,
        st.Reason.BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_MAX_COST),
        True,
    ),
    (
        "a held stop is kept by a tick although the budget reads within",
        {"job_budget": WITHIN, "has_budget": True, "held": HELD, "trigger": Trigger.TICK},
        True,
        costing.REASON_MAX_COST,
        st.Reason.BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_MAX_COST),
        False,
    ),
    (
        "a held stop is kept by a pod event",
        {"job_budget": WITHIN, "has_budget": True, "held": HELD, "trigger": Trigger.CHILDREN},
        True,
        costing.REASON_MAX_COST,
        st.Reason.BUDGET_EXCEEDED,
        (st.TRUE, costing.REASON_MAX_COST),
        False,
    ),
    (
        "a spec change (raised budget) lifts the stop",
        {"job_budget": WITHIN, "has_budget": True, "held": HELD, "trigger": Trigger.SPEC},
        False,
        costing.REASON_WITHIN_BUDGET,
        None,
        (st.FALSE, costing.REASON_WITHIN_BUDGET),
        False,
    ),
    (
        "a released condition stays shown after the budget is removed",
        {"held": RELEASED},
        False,
        costing.REASON_WITHIN_BUDGET,
        None,
        (st.FALSE, costing.REASON_WITHIN_BUDGET),
        False,
    ),
    (
        "user suspend without a budget",
        {"user_suspend": True},
        False,
        costing.REASON_WITHIN_BUDGET,
        st.Reason.SUSPENDED_BY_USER,
        None,
        False,
    ),
    (
        "user suspend wins as the reason over a budget stop",
        {"user_suspend": True, "job_budget": OVER_COST, "has_budget": True},
        True,
        costing.REASON_MAX_COST,
        st.Reason.SUSPENDED_BY_USER,
        (st.TRUE, costing.REASON_MAX_COST),
        True,
    ),
]


@pytest.mark.parametrize(
    ("inputs", "exceeded", "reason", "suspend", "condition", "newly"),
    [row[1:] for row in BUDGET_ROWS],
    ids=[row[0] for row in BUDGET_ROWS],
)
def test_decide_budget(
    inputs: dict[str, Any],
    exceeded: bool,
    reason: str,
    suspend: str | None,
    condition: tuple[str, str] | None,
    newly: bool,
) -> None:
    out = decide.decide_budget(budget_inputs(**inputs))
    assert out.decision.exceeded is exceeded
    assert out.decision.reason == reason
    assert out.suspend_reason == suspend
    if condition is None:
        assert out.condition is None
    else:
        assert out.condition is not None
        assert (out.condition.type, out.condition.status, out.condition.reason) == (st.BUDGET_EXCEEDED, *condition)
    assert out.newly_exceeded is newly


def test_a_kept_stop_repeats_the_held_message() -> None:
    out = decide.decide_budget(budget_inputs(job_budget=WITHIN, has_budget=True, held=HELD))
    assert out.condition is not None and out.condition.message == "held"


CHILDREN_ROWS = [
    # id, job_exists, job_suspended, want_suspend, restart_after, old listed, trigger, action
    ("spec trigger creates", False, False, False, None, False, Trigger.SPEC, ChildAction.CREATE),
    ("spec trigger creates suspended too", False, False, True, None, False, Trigger.SPEC, ChildAction.CREATE),
    ("a pod event re-creates a missing Job", False, False, False, None, False, Trigger.CHILDREN, ChildAction.CREATE),
    ("a tick re-creates a missing Job", False, False, False, None, False, Trigger.TICK, ChildAction.CREATE),
    ("backoff not over yet", False, False, False, LATER, False, Trigger.TICK, ChildAction.KEEP),
    ("backoff over: recreate", False, False, False, NOW, False, Trigger.TICK, ChildAction.RECREATE),
    ("backoff over on a spec trigger", False, False, False, NOW, False, Trigger.SPEC, ChildAction.RECREATE),
    (
        "backoff over, old Job still listed",
        False,
        False,
        False,
        NOW,
        True,
        Trigger.TICK,
        ChildAction.WAIT_FOR_DELETION,
    ),
    ("running and wanted running", True, False, False, None, False, Trigger.SPEC, ChildAction.KEEP),
    ("suspended and wanted suspended", True, True, True, None, False, Trigger.TICK, ChildAction.KEEP),
    ("suspend a running Job", True, False, True, None, False, Trigger.SPEC, ChildAction.SET_SUSPEND),
    ("resume a suspended Job", True, True, False, None, False, Trigger.CHILDREN, ChildAction.SET_SUSPEND),
]


@pytest.mark.parametrize(
    ("exists", "suspended", "want", "after", "listed", "trigger", "action"),
    [row[1:] for row in CHILDREN_ROWS],
    ids=[row[0] for row in CHILDREN_ROWS],
)
def test_decide_children(
    exists: bool,
    suspended: bool,
    want: bool,
    after: datetime | None,
    listed: bool,
    trigger: Trigger,
    action: ChildAction,
) -> None:
    got = decide.decide_children(
        job_exists=exists,
        job_suspended=suspended,
        want_suspend=want,
        restart_after=after,
        old_incarnation_listed=listed,
        trigger=trigger,
        now=NOW,
    )
    assert got == action


EARLIER = NOW - timedelta(minutes=5)


def suspended(status: str, since: datetime | None = None) -> Condition:
    return Condition(type=st.SUSPENDED, status=status, reason="x", last_transition_time=since)


RESUMED_ROWS = [
    ("never suspended", None, False, None),
    ("suspended and staying so", suspended(st.TRUE), True, None),
    ("resuming right now", suspended(st.TRUE), False, NOW),
    ("resumed earlier", suspended(st.FALSE, EARLIER), False, EARLIER),
    ("unknown status", suspended("Unknown"), False, None),
]


@pytest.mark.parametrize(
    ("cond", "suspending", "expected"), [r[1:] for r in RESUMED_ROWS], ids=[r[0] for r in RESUMED_ROWS]
)
def test_resumed_at(cond: Condition | None, suspending: bool, expected: datetime | None) -> None:
    assert decide.resumed_at(cond, suspending=suspending, now=NOW) == expected


OUTCOME_ROWS = [
    # id, verdict, deadline passed, job exists, restart pending, outcome
    ("success", st.Verdict.SUCCEEDED, False, True, False, Outcome.SUCCEEDED),
    ("success wins over a passed deadline", st.Verdict.SUCCEEDED, True, True, False, Outcome.SUCCEEDED),
    ("the Job's own deadline", st.Verdict.DEADLINE, False, True, False, Outcome.DEADLINE),
    ("the operator's deadline", st.Verdict.NONE, True, True, False, Outcome.DEADLINE),
    ("deadline wins over a failure", st.Verdict.WORKER_FAILED, True, True, False, Outcome.DEADLINE),
    ("worker failure", st.Verdict.WORKER_FAILED, False, True, False, Outcome.RESTART),
    ("disruption", st.Verdict.DISRUPTED, False, True, False, Outcome.RESTART),
    ("failure without a Job: nothing to restart", st.Verdict.WORKER_FAILED, False, False, False, Outcome.CONTINUE),
    ("waiting for the backoff", st.Verdict.NONE, False, False, True, Outcome.WAITING_TO_RESTART),
    ("running", st.Verdict.NONE, False, True, False, Outcome.CONTINUE),
    ("not created yet", st.Verdict.NONE, False, False, False, Outcome.CONTINUE),
]

BAD_INPUT_ROWS = [
    # id, verdict (what the peers' exits say), deadline passed, outcome with a bad-input pod in the gang
    ("bad input fails at once, no restart", st.Verdict.WORKER_FAILED, False, Outcome.BAD_INPUT),
    ("peers exiting 1 after it do not make it a restart", st.Verdict.WORKER_FAILED, False, Outcome.BAD_INPUT),
    ("a disruption seen with it does not either", st.Verdict.DISRUPTED, False, Outcome.BAD_INPUT),
    ("seen before the Job says it failed", st.Verdict.NONE, False, Outcome.BAD_INPUT),
    ("its cause wins over a passed deadline", st.Verdict.DEADLINE, True, Outcome.BAD_INPUT),
    ("success still wins (every index succeeded)", st.Verdict.SUCCEEDED, False, Outcome.SUCCEEDED),
]


@pytest.mark.parametrize(
    ("verdict", "passed", "exists", "pending", "outcome"),
    [r[1:] for r in OUTCOME_ROWS],
    ids=[r[0] for r in OUTCOME_ROWS],
)
def test_decide_outcome(verdict: st.Verdict, passed: bool, exists: bool, pending: bool, outcome: Outcome) -> None:
    got = decide.decide_outcome(verdict, deadline_passed=passed, job_exists=exists, restart_pending=pending)
    assert got == outcome


@pytest.mark.parametrize(
    ("verdict", "passed", "outcome"), [r[1:] for r in BAD_INPUT_ROWS], ids=[r[0] for r in BAD_INPUT_ROWS]
)
def test_decide_outcome_with_bad_input(verdict: st.Verdict, passed: bool, outcome: Outcome) -> None:
    got = decide.decide_outcome(verdict, deadline_passed=passed, job_exists=True, restart_pending=False, bad_input=True)
    assert got == outcome


def test_bad_input_conditions_carry_the_cause() -> None:
    ended = Termination("tune-1", 1, 2, message="data.jsonl line 3: field 'label' is missing")
    conds = decide.bad_input_conditions(ended)
    assert {(c.type, c.status, c.reason) for c in conds} == {
        (st.FAILED, st.TRUE, st.Reason.BAD_INPUT),
        (st.RUNNING, st.FALSE, st.Reason.BAD_INPUT),
    }
    assert st.Reason.BAD_INPUT == "BadInput"
    assert all(c.message.startswith("data.jsonl line 3: field 'label' is missing") for c in conds)
    assert all("tune-1" in c.message and "not restarted" in c.message for c in conds)


@pytest.mark.parametrize(
    ("deadline", "started", "passed"),
    [
        (None, EARLIER, False),
        (600, None, False),
        (600, EARLIER, False),
        (300, EARLIER, True),
        (299, EARLIER, True),
    ],
)
def test_deadline_passed(deadline: int | None, started: datetime | None, passed: bool) -> None:
    assert decide.deadline_passed(deadline, started, NOW) is passed



# -- activeDeadlineSeconds without suspended and queued time -----------------------------------
def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


RUNS = decide.DeadlineClock()
PAUSED_SINCE_100 = decide.DeadlineClock(0.0, ago(100))

TRACK_ROWS = [
    # id, clock as stored, started, phase now, clock after
    ("not started: nothing counts, nothing to track", RUNS, False, st.SUSPENDED, RUNS),
    ("queued before the start: nothing to track", RUNS, False, st.QUEUED, RUNS),
    ("running: the clock runs", RUNS, True, st.RUNNING, RUNS),
    ("a user or budget suspension stops it now", RUNS, True, st.SUSPENDED, decide.DeadlineClock(0.0, NOW)),
    ("a Kueue preemption (Queued) stops it now", RUNS, True, st.QUEUED, decide.DeadlineClock(0.0, NOW)),
    ("still held: the pause keeps its start", PAUSED_SINCE_100, True, st.SUSPENDED, PAUSED_SINCE_100),
    ("held by another (suspended, then queued): one pause", PAUSED_SINCE_100, True, st.QUEUED, PAUSED_SINCE_100),
    ("resumed: the pause is added up", decide.DeadlineClock(30.0, ago(100)), True, st.CREATED,
     decide.DeadlineClock(130.0, None)),
    ("running again after a pause", PAUSED_SINCE_100, True, st.RUNNING, decide.DeadlineClock(100.0, None)),
    ("a restart after a pause counts", PAUSED_SINCE_100, True, st.RESTARTING, decide.DeadlineClock(100.0, None)),
]


@pytest.mark.parametrize(
    ("clock", "started", "phase", "want"), [r[1:] for r in TRACK_ROWS], ids=[r[0] for r in TRACK_ROWS]
)
def test_track_deadline(clock: decide.DeadlineClock, started: bool, phase: str, want: decide.DeadlineClock) -> None:
    assert decide.track_deadline(clock, started=started, phase=phase, now=NOW) == want


DEADLINE_ROWS = [
    # id, deadline, started seconds ago, clock, passed
    ("ran 100 of 60 with no pause", 60, 100, RUNS, True),
    ("ran 100, 50 of it suspended: 50 of 60", 60, 100, decide.DeadlineClock(50.0, None), False),
    ("ran 100, 40 of it suspended: 60 of 60", 60, 100, decide.DeadlineClock(40.0, None), True),
    ("suspended for the last 90 of 100: 10 of 60", 60, 100, decide.DeadlineClock(0.0, ago(90)), False),
    ("past pauses and the current one add up", 60, 200, decide.DeadlineClock(100.0, ago(50)), False),
    ("a pause mark in the future counts as none", 60, 100, decide.DeadlineClock(0.0, NOW + timedelta(seconds=5)), True),
]


@pytest.mark.parametrize(
    ("deadline", "started_ago", "clock", "passed"), [r[1:] for r in DEADLINE_ROWS], ids=[r[0] for r in DEADLINE_ROWS]
)
def test_deadline_passed_without_paused_time(
    deadline: int, started_ago: float, clock: decide.DeadlineClock, passed: bool
) -> None:
    assert decide.deadline_passed(deadline, ago(started_ago), NOW, clock) is passed


def test_deadline_message_names_the_time_left_out() -> None:
    conds = decide.deadline_conditions(60, 125.4)
    assert all("activeDeadlineSeconds (60s, not counting 125s suspended or queued)" in c.message for c in conds)


RESTART_ROWS = [
    # id, verdict, restarts, disruptions, limit, give up, restarts after, disruptions after, delay, reason
    ("first failure", st.Verdict.WORKER_FAILED, 0, 0, 3, False, 1, 0, 10.0, st.Reason.WORKER_FAILED),
    ("backoff doubles", st.Verdict.WORKER_FAILED, 2, 0, 3, False, 3, 0, 40.0, st.Reason.WORKER_FAILED),
    ("backoff is capped", st.Verdict.WORKER_FAILED, 6, 0, 10, False, 7, 0, 300.0, st.Reason.WORKER_FAILED),
    ("limit used up", st.Verdict.WORKER_FAILED, 3, 1, 3, True, 3, 1, 0.0, st.Reason.BACKOFF_LIMIT_EXCEEDED),
    ("limit 0 fails at once", st.Verdict.WORKER_FAILED, 0, 0, 0, True, 0, 0, 0.0, st.Reason.BACKOFF_LIMIT_EXCEEDED),
    ("disruption is free and immediate", st.Verdict.DISRUPTED, 3, 0, 3, False, 3, 1, 0.0, st.Reason.DISRUPTED),
    ("disruptions accumulate", st.Verdict.DISRUPTED, 0, 4, 3, False, 0, 5, 0.0, st.Reason.DISRUPTED),
]


@pytest.mark.parametrize(
    (
        "verdict",
        "restarts",
        "disruptions",
        "limit",
        "give_up",
        "restarts_after",
        "disruptions_after",
        "delay",
        "reason",
    ),
    [r[1:] for r in RESTART_ROWS],
    ids=[r[0] for r in RESTART_ROWS],
)
def test_decide_restart(
    verdict: st.Verdict,
    restarts: int,
    disruptions: int,
    limit: int,
    give_up: bool,
    restarts_after: int,
    disruptions_after: int,
    delay: float,
    reason: str,
) -> None:
    plan = decide.decide_restart(
        verdict,
        restarts=restarts,
        disruptions=disruptions,
        backoff_limit=limit,
        backoff_seconds=10.0,
        backoff_max_seconds=300.0,
        detail="x-0 exited 1",
    )
    assert (plan.give_up, plan.restarts, plan.disruptions, plan.delay_seconds) == (
        give_up,
        restarts_after,
        disruptions_after,
        delay,
    )
    assert plan.condition_reason == reason
    assert plan.worker_failure is (verdict == st.Verdict.WORKER_FAILED)
    assert "x-0 exited 1" in plan.message
    conds = {(c.type, c.status) for c in decide.restart_conditions(plan)}
    if give_up:
        assert conds == {(st.FAILED, st.TRUE), (st.RESTARTING, st.FALSE)}
        assert f"backoffLimit ({limit})" in plan.message
    else:
        assert conds == {(st.RESTARTING, st.TRUE)}
        assert f"in {delay:g}s" in plan.message


def test_deadline_conditions_name_the_field() -> None:
    conds = decide.deadline_conditions(60)
    assert {(c.type, c.status, c.reason) for c in conds} == {
        (st.FAILED, st.TRUE, st.Reason.DEADLINE_EXCEEDED),
        (st.RUNNING, st.FALSE, st.Reason.DEADLINE_EXCEEDED),
    }
    assert all("activeDeadlineSeconds (60s)" in c.message for c in conds)


def test_waiting_conditions_replace_what_the_pods_said_about_running() -> None:
    said = [
        st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.WAITING_FOR_JOB, "no Job"),
        st.CondUpdate(st.BUDGET_EXCEEDED, st.FALSE, "WithinBudget"),
    ]
    out = decide.waiting_conditions(said)
    assert [(c.type, c.reason) for c in out] == [
        (st.BUDGET_EXCEEDED, "WithinBudget"),
        (st.RUNNING, st.Reason.WORKER_FAILED),
    ]


def conds(*pairs: tuple[str, str]) -> AdaptationJobStatus:
    return AdaptationJobStatus(conditions=[Condition(type=t, status=s, reason="x") for t, s in pairs])


SETTLE_ROWS = [
    ("nothing to settle", st.RUNNING, conds(), []),
    ("a restart is over", st.RUNNING, conds((st.RESTARTING, st.TRUE)), [(st.RESTARTING, st.Reason.NOT_RESTARTING)]),
    ("still restarting", st.RESTARTING, conds((st.RESTARTING, st.TRUE)), []),
    ("resumed", st.CREATED, conds((st.SUSPENDED, st.TRUE)), [(st.SUSPENDED, st.Reason.RESUMED)]),
    ("still suspended", st.SUSPENDED, conds((st.SUSPENDED, st.TRUE)), []),
    ("already resumed", st.RUNNING, conds((st.SUSPENDED, st.FALSE)), []),
    ("success says it did not fail", st.SUCCEEDED, conds(), [(st.FAILED, st.Reason.JOB_COMPLETED)]),
    ("success keeps an earlier Failed condition", st.SUCCEEDED, conds((st.FAILED, st.FALSE)), []),
]


@pytest.mark.parametrize(("phase", "old", "expected"), [r[1:] for r in SETTLE_ROWS], ids=[r[0] for r in SETTLE_ROWS])
def test_settle_conditions(phase: str, old: AdaptationJobStatus, expected: list[tuple[str, str]]) -> None:
    out = decide.settle_conditions(phase, old)
    assert [(c.type, c.reason) for c in out] == expected
    assert all(c.status == st.FALSE for c in out)


@pytest.mark.parametrize(
    ("ttl", "completed", "expired"),
    [
        (None, EARLIER, False),
        (60, None, False),
        (600, EARLIER, False),
        (300, EARLIER, True),
        (0, NOW, True),
    ],
)
def test_expired(ttl: int | None, completed: datetime | None, expired: bool) -> None:
    assert decide.expired(ttl, completed, NOW) is expired


def test_the_deadline_clock_round_trips_through_annotations_and_survives_bad_values() -> None:
    from kadapt_operator.runtime import deadline

    clock = decide.DeadlineClock(125.25, NOW.replace(microsecond=123456))
    assert deadline.clock_of({k: v for k, v in deadline.annotations_of(clock).items() if v is not None}) == clock
    assert deadline.annotations_of(decide.DeadlineClock(3.0))[deadline.ANN_PAUSED_SINCE] is None
    bad = {deadline.ANN_PAUSED_SECONDS: "lots", deadline.ANN_PAUSED_SINCE: "yesterday"}
    assert deadline.clock_of(bad) == decide.DeadlineClock()


# -- pods the Job controller cannot create ------------------------------------------------------
LIVE_JOB = st.JobView(name="tune", uid="u1", suspended=False, completions=2, succeeded=0, complete=False,
                      failed_reason=None)
STARTING = st.Observation(st.CREATED, (st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.PODS_STARTING, "0/2"),))
FAILING = st.Observation(st.RESTARTING, (), st.Verdict.WORKER_FAILED)

MISSING_ROWS = [
    # id, job, current pods, observation, read the Job's Events
    ("no Job yet", None, 0, STARTING, False),
    ("a live Job short of pods", LIVE_JOB, 1, STARTING, True),
    ("a full gang", LIVE_JOB, 2, STARTING, False),
    ("a suspended Job has no pods on purpose", replace(LIVE_JOB, suspended=True), 0, STARTING, False),
    ("a finished Job", replace(LIVE_JOB, complete=True), 0, STARTING, False),
    ("a failed Job", replace(LIVE_JOB, failed_reason="BackoffLimitExceeded"), 0, STARTING, False),
    ("a failure to handle first", LIVE_JOB, 1, FAILING, False),
]


@pytest.mark.parametrize(
    ("job", "pods", "observation", "want"), [r[1:] for r in MISSING_ROWS], ids=[r[0] for r in MISSING_ROWS]
)
def test_pods_missing(job: st.JobView | None, pods: int, observation: st.Observation, want: bool) -> None:
    assert decide.pods_missing(job, pods, 2, observation) is want


def event(reason: str = "FailedCreate", *, kind: str = "Job", name: str = "tune", uid: str | None = "u1",
          message: str = "forbidden: exceeded quota", last: str = "2026-01-01T11:00:00Z") -> dict[str, Any]:
    involved = {"kind": kind, "name": name, **({"uid": uid} if uid else {})}
    return {"reason": reason, "involvedObject": involved, "message": message, "lastTimestamp": last}


FAILED_CREATE_ROWS = [
    # id, events, the message named (None: no FailedCreate condition)
    ("none", [], None),
    ("this Job's refusal", [event()], "exceeded quota"),
    ("an Event without a uid (older API servers)", [event(uid=None)], "exceeded quota"),
    ("another incarnation's", [event(uid="u0")], None),
    ("another Job's", [event(name="other")], None),
    ("a pod's Event of the same name", [event(kind="Pod")], None),
    ("another reason", [event("SuccessfulCreate")], None),
    ("the newest wins", [event(message="old: LimitRange", last="2026-01-01T10:00:00Z"),
                         event(message="new: PodSecurity"), event(message="older", last="bad time")],
     "new: PodSecurity"),
]


@pytest.mark.parametrize(
    ("events", "named"), [r[1:] for r in FAILED_CREATE_ROWS], ids=[r[0] for r in FAILED_CREATE_ROWS]
)
def test_failed_create(events: list[dict[str, Any]], named: str | None) -> None:
    got = decide.failed_create(events, LIVE_JOB)
    if named is None:
        assert got is None
        return
    assert got is not None and (got.type, got.status, got.reason) == (st.RUNNING, st.FALSE, st.Reason.FAILED_CREATE)
    assert named in got.message and "ResourceQuota" in got.message


SHOWN = Condition(type=st.RUNNING, status=st.FALSE, reason=st.Reason.FAILED_CREATE, message="exceeded quota")
STARTING_SHOWN = Condition(type=st.RUNNING, status=st.FALSE, reason=st.Reason.PODS_STARTING, message="0/2")
GRACE = decide.FAILED_CREATE_GRACE_SECONDS

CHECK_ROWS = [
    # id, pods missing, trigger, Job age (s), Running as shown, what to do
    ("a full gang: nothing", False, Trigger.TICK, 60.0, SHOWN, decide.CreationCheck.NONE),
    ("a tick, Job old enough: read its Events", True, Trigger.TICK, GRACE, None, decide.CreationCheck.READ),
    ("a tick just after the Job's creation: no request", True, Trigger.TICK, GRACE - 1, None,
     decide.CreationCheck.NONE),
    ("Job age unknown: no request", True, Trigger.TICK, None, None, decide.CreationCheck.NONE),
    ("a pod event: no request", True, Trigger.CHILDREN, 60.0, STARTING_SHOWN, decide.CreationCheck.NONE),
    ("a pod event keeps the refusal shown (no flapping)", True, Trigger.CHILDREN, 60.0, SHOWN,
     decide.CreationCheck.KEEP),
    ("a spec change keeps it too", True, Trigger.SPEC, 60.0, SHOWN, decide.CreationCheck.KEEP),
]


@pytest.mark.parametrize(
    ("missing", "trigger", "age", "shown", "want"), [r[1:] for r in CHECK_ROWS], ids=[r[0] for r in CHECK_ROWS]
)
def test_creation_check(
    missing: bool, trigger: Trigger, age: float | None, shown: Condition | None, want: decide.CreationCheck
) -> None:
    assert decide.creation_check(missing, trigger=trigger, job_age_seconds=age, shown=shown) == want
