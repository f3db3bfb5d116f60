"""Hold a training run at a known step, so that tests act on a state instead of racing a clock.

A test that wants to interrupt a run mid-training (Ctrl-C, SIGTERM, a budget stop, an operator
restart) cannot know how fast this machine trains: on a fast machine the run finishes before
the interrupt lands, on a slow one the interrupt lands before the first checkpoint. Setting
``KADAPT_HOLD_AFTER_STEP=N`` makes the trainer finish step N (its telemetry, evaluation and
checkpoint included) and then wait there until a stop signal arrives or the release file
(``KADAPT_HOLD_RELEASE_FILE``) appears. Rank 0 prints one line when it holds, which is the
state a test waits for.

Every rank of the gang holds, not only rank 0: a rank that ran on would sit in the next
collective, whose timeout would then fail the gang. Each rank leaves the hold on its own stop
signal (the local runner and Kubernetes signal every pod) or when the shared release file
appears. Unset, the hold costs one dictionary lookup per step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

#: Finish this optimizer step, then hold (unset or empty: never hold).
HOLD_AFTER_STEP_ENV = "KADAPT_HOLD_AFTER_STEP"
#: A path; the hold ends when a file appears there (optional: a stop signal also ends it).
HOLD_RELEASE_FILE_ENV = "KADAPT_HOLD_RELEASE_FILE"
#: What rank 0 prints when it holds; tests wait for this line in the pod's log.
HOLDING_LINE = "kadapt: holding after step {step}"

_POLL_SECONDS = 0.1


class StopFlag(Protocol):
    """What the hold needs of :class:`kadapt_trainer.checkpoint.StopSignal`."""

    @property
    def requested(self) -> bool:
        """True once SIGTERM/SIGINT arrived."""
        ...


def hold_step() -> int | None:
    """The step to hold after, from ``KADAPT_HOLD_AFTER_STEP``.

    Raises:
        ValueError: naming the variable, when it is set but not a whole number >= 1.
    """
    raw = os.environ.get(HOLD_AFTER_STEP_ENV, "").strip()
    if not raw:
        return None
    try:
        step = int(raw)
    except ValueError:
        step = 0
    if step < 1:
        raise ValueError(f"{HOLD_AFTER_STEP_ENV}={raw!r}: must be a whole number >= 1 (a step), or unset")
    return step


def release_file() -> Path | None:
    """The file whose appearance ends the hold, from ``KADAPT_HOLD_RELEASE_FILE``."""
    raw = os.environ.get(HOLD_RELEASE_FILE_ENV, "").strip()
    return Path(raw) if raw else None


def hold_after_step(step: int, stop: StopFlag, is_main: bool) -> bool:
    """Block after ``step`` while ``KADAPT_HOLD_AFTER_STEP`` names it, until a stop or the release file.

    Called by the training loop once per optimizer step, after the step's telemetry and
    checkpoint. Returns True when it held. A stop that arrives while holding is left set, so
    the loop checkpoints and exits at the end of the next step as it would for any stop.
    """
    target = hold_step()
    if target is None or step != target:
        return False
    release = release_file()
    if is_main:
        until = f"a stop signal or {release}" if release is not None else "a stop signal"
        print(f"{HOLDING_LINE.format(step=step)} ({HOLD_AFTER_STEP_ENV}) until {until}", flush=True)
    while not stop.requested and not (release is not None and release.exists()):
        time.sleep(_POLL_SECONDS)  # a signal handler sets stop.requested; polling sees it
    return True
