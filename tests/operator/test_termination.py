"""A trainer pod's end, classified: bad input (exit 2 + its message) fails the job for good.

Pure unit tests of ``runtime/termination.py`` on Pod objects shaped as the API returns them,
plus the rendered container that makes the kubelet carry the trainer's message.
"""

from __future__ import annotations

from typing import Any

import pytest

from kadapt_operator.render import CONTAINER_NAME, TERMINATION_LOG
from kadapt_operator.runtime.termination import (
    Outcome,
    Termination,
    cause_of,
    classify_pod,
    permanent_failure,
)
from tests.operator.test_render import container, rendered

CAUSE = "dataset.labelField 'label': /data/val.jsonl line 4: the class 7 never occurs in the training data"


def pod(
    index: int,
    exit_code: int | None,
    message: str | None = None,
    reason: str | None = None,
    name: str = CONTAINER_NAME,
    key: str = "state",
) -> dict[str, Any]:
    """A worker pod of an Indexed Job; exit_code None: still running."""
    if exit_code is None:
        state: dict[str, Any] = {"running": {"startedAt": "2026-12-01T00:00:00Z"}}
    else:
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if not exit_code else "Error"),
        }
        if message is not None:
            terminated["message"] = message
        state = {"terminated": terminated}
    status: dict[str, Any] = {"name": name, "ready": False, "restartCount": 0, key: state}
    if key == "lastState":
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    return {
        "metadata": {
            "name": f"demo-{index}-abcde",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": "Failed" if exit_code else "Running", "containerStatuses": [status]},
    }


def test_bad_input_is_permanent_with_the_trainers_cause() -> None:
    t = classify_pod(pod(0, 2, CAUSE + "\n"))
    assert t == Termination("demo-0-abcde", 0, 2, "Error")
    assert t.outcome == Outcome.BAD_INPUT and t.cause == CAUSE
    assert t.permanent


def test_cause_from_a_log_tail_fallback() -> None:
    tail = "kadapt: strategy full\nTraceback...\nkadapt-trainer: error: " + CAUSE + "\n[W] torchrun: exit 2"
    t = classify_pod(pod(0, 2, tail))
    assert t is not None and t.cause == CAUSE


@pytest.mark.parametrize(
    ("code", "reason", "outcome", "fragment"),
    [
        (0, None, Outcome.SUCCEEDED, ""),
        (143, None, Outcome.STOPPED, "exited with code 143"),
        (1, None, Outcome.CRASHED, "exited with code 1 (Error)"),
        (137, "OOMKilled", Outcome.CRASHED, "OOMKilled"),
        (2, None, Outcome.BAD_INPUT, "bad input (exit code 2)"),
    ],
)
def test_exit_codes(code: int, reason: str | None, outcome: Outcome, fragment: str) -> None:
    t = classify_pod(pod(0, code, reason=reason))
    assert t is not None and t.outcome == outcome and fragment in t.cause
    assert t.permanent == (outcome == Outcome.BAD_INPUT)


def test_not_terminated_or_no_trainer_container() -> None:
    assert classify_pod(pod(0, None)) is None
    assert classify_pod(pod(0, 2, CAUSE, name="sidecar")) is None
    assert classify_pod({"metadata": {"name": "x"}}) is None


def test_last_state_counts_when_the_container_restarted() -> None:
    t = classify_pod(pod(1, 2, CAUSE, key="lastState"))
    assert t is not None and t.permanent and t.index == 1


def test_gang_the_bad_input_pod_wins_over_peers_that_lost_the_rendezvous() -> None:
    gang = [pod(0, 1, "DistNetworkError: connection reset"), pod(1, 2, CAUSE), pod(2, None)]
    t = permanent_failure(gang)
    assert t is not None and t.pod == "demo-1-abcde" and t.cause == CAUSE
    assert permanent_failure([pod(0, 1), pod(1, 143), pod(2, 0)]) is None


def test_lowest_index_first() -> None:
    t = permanent_failure([pod(3, 2, "late"), pod(1, 2, "early")])
    assert t is not None and t.cause == "early"


def test_long_messages_are_cut() -> None:
    assert len(cause_of("x" * 5000, 2, None)) == 1024


def test_the_trainer_container_carries_its_termination_message() -> None:
    c = container(rendered())
    assert c["terminationMessagePath"] == TERMINATION_LOG == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
