"""kstatus conditions (Ready/Reconciling/Stalled) for kubectl wait and Flux health checks (pure)."""

from __future__ import annotations

import pytest

from kadapt_operator.api import Condition
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.readiness import READY, RECONCILING, STALLED, readiness


def c(kind: str, status: str, reason: str, message: str = "") -> Condition:
    return Condition(type=kind, status=status, reason=reason, message=message)


CASES = [
    ("pending", st.PENDING, [], (st.FALSE, st.TRUE, st.FALSE)),
    ("queued", st.QUEUED, [c(st.QUEUED, st.TRUE, "WaitingForAdmission", "LocalQueue gpus")],
     (st.FALSE, st.TRUE, st.FALSE)),
    ("running", st.RUNNING, [c(st.RUNNING, st.TRUE, "PodsRunning", "2/2 pods running")], (st.FALSE, st.TRUE, st.FALSE)),
    ("restarting", st.RESTARTING, [], (st.FALSE, st.TRUE, st.FALSE)),
    ("succeeded", st.SUCCEEDED, [c(st.SUCCEEDED, st.TRUE, "JobCompleted", "output written")],
     (st.TRUE, st.FALSE, st.FALSE)),
    ("failed", st.FAILED, [c(st.FAILED, st.TRUE, "BackoffLimitExceeded", "3 restarts")], (st.FALSE, st.FALSE, st.TRUE)),
    ("budget", st.SUSPENDED, [c(st.BUDGET_EXCEEDED, st.TRUE, "MaxCostReached", "raise spec.budget.maxCost")],
     (st.FALSE, st.FALSE, st.TRUE)),
    ("user suspend", st.SUSPENDED, [c(st.SUSPENDED, st.TRUE, "SuspendedByUser", "spec.runPolicy.suspend")],
     (st.FALSE, st.FALSE, st.FALSE)),
    ("missing secret", st.CREATED,
     [c(st.RUNNING, st.FALSE, "CreateContainerConfigError", 'secret "hf-token" not found')],
     (st.FALSE, st.FALSE, st.TRUE)),
    ("image pull", st.CREATED, [c(st.RUNNING, st.FALSE, "ImagePullError", "ErrImagePull")],
     (st.FALSE, st.FALSE, st.TRUE)),
    ("unschedulable waits", st.CREATED, [c(st.RUNNING, st.FALSE, "Unschedulable", "no GPU node")],
     (st.FALSE, st.TRUE, st.FALSE)),
]


@pytest.mark.parametrize(("phase", "conditions", "expected"), [x[1:] for x in CASES], ids=[x[0] for x in CASES])
def test_kstatus_conditions(phase: str, conditions: list[Condition], expected: tuple[str, str, str]) -> None:
    got = {u.type: u for u in readiness(phase, conditions)}
    assert (got[READY].status, got[RECONCILING].status, got[STALLED].status) == expected
    assert all(u.reason and u.message for u in got.values())


def test_messages_carry_the_cause() -> None:
    stalled = {u.type: u for u in readiness(st.CREATED, [c(st.RUNNING, st.FALSE, "CreateContainerConfigError",
                                                          'secret "hf-token" not found')])}
    assert stalled[STALLED].message == 'secret "hf-token" not found'
    queued = {u.type: u for u in readiness(st.QUEUED, [c(st.QUEUED, st.TRUE, "WaitingForAdmission", "LocalQueue q")])}
    assert queued[RECONCILING].message == "LocalQueue q"
