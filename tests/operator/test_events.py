"""Which condition transitions get an Event: one per real transition, table by table (pure)."""

from __future__ import annotations

import pytest

from kadapt_operator.api import Condition
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.events import worth_an_event


def cond(type_: str, status: str, reason: str, message: str = "") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message)


ROWS = [
    # id, conditions that moved in one status write, the (type, reason) of each Event
    ("a pull error: Running, not the three kstatus conditions",
     [cond(st.RUNNING, st.FALSE, "ImagePullError"), cond("Ready", st.FALSE, "ImagePullError"),
      cond("Reconciling", st.FALSE, "ImagePullError"), cond("Stalled", st.TRUE, "ImagePullError")],
     [(st.RUNNING, "ImagePullError")]),
    ("pods running: Running=True, not Reconciling's new reason",
     [cond(st.RUNNING, st.TRUE, "PodsRunning"), cond("Reconciling", st.TRUE, "Running")],
     [(st.RUNNING, "PodsRunning")]),
    ("succeeded: Succeeded=True, not Ready=True",
     [cond(st.RUNNING, st.FALSE, "JobCompleted"), cond(st.SUCCEEDED, st.TRUE, "JobCompleted"),
      cond("Ready", st.TRUE, "Succeeded")],
     [(st.SUCCEEDED, "JobCompleted")]),
    ("a deadline: one Event, from Failed=True",
     [cond(st.FAILED, st.TRUE, "DeadlineExceeded"), cond(st.RUNNING, st.FALSE, "DeadlineExceeded")],
     [(st.FAILED, "DeadlineExceeded")]),
    ("the True side wins whatever the order",
     [cond(st.RUNNING, st.FALSE, "WorkerFailed"), cond(st.RESTARTING, st.TRUE, "WorkerFailed")],
     [(st.RESTARTING, "WorkerFailed")]),
    ("two transitions, two Events",
     [cond(st.CREATED, st.TRUE, "ChildrenCreated"), cond(st.RUNNING, st.FALSE, "Unschedulable")],
     [(st.CREATED, "ChildrenCreated"), (st.RUNNING, "Unschedulable")]),
    ("two True sides of one cause each say theirs (the budget stops the job: BudgetExceeded, Suspended)",
     [cond(st.SUSPENDED, st.TRUE, "NamespaceBudgetExceeded"), cond(st.RUNNING, st.FALSE, "NamespaceBudgetExceeded"),
      cond(st.BUDGET_EXCEEDED, st.TRUE, "NamespaceBudgetExceeded")],
     [(st.SUSPENDED, "NamespaceBudgetExceeded"), (st.BUDGET_EXCEEDED, "NamespaceBudgetExceeded")]),
    ("two False sides of one warning: one Event",
     [cond(st.RUNNING, st.FALSE, "BudgetExceeded"), cond(st.RESTARTING, st.FALSE, "BudgetExceeded")],
     [(st.RUNNING, "BudgetExceeded")]),
    ("a plain False is no Event", [cond(st.RUNNING, st.FALSE, "PodsStarting")], []),
    ("a recovery is", [cond(st.SUSPENDED, st.FALSE, "Resumed")], [(st.SUSPENDED, "Resumed")]),
]


@pytest.mark.parametrize(("changed", "want"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_worth_an_event(changed: list[Condition], want: list[tuple[str, str]]) -> None:
    assert [(c.type, c.reason) for c in worth_an_event(changed)] == want
