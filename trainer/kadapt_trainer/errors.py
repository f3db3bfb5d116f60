"""Errors the trainer turns into a one-line message and an exit code."""

from __future__ import annotations

import math


class BadInputError(Exception):
    """Input that no retry can fix (config, data, model): reported in one line, exit 2.

    The message names the field and what to do, so that a user reading ``kubectl describe``
    or the local runner's output knows the fix without reading a traceback.
    """


class NonFiniteLossError(BadInputError):
    """The training loss became NaN or infinite: the run fails, it never "succeeds".

    A subclass of BadInputError (exit 2, one line, no gang restarts): resuming from the last
    checkpoint replays the same data in the same order with the same settings and diverges
    again, so a retry cannot fix it; a lower learning rate, fp32 or cleaner data can.
    """


def check_finite_loss(loss: float, step: int) -> None:
    """Fail the job at the first optimizer step whose loss (over all ranks) is not finite.

    Called before the step is recorded or checkpointed, so no checkpoint holds diverged weights.

    Raises:
        NonFiniteLossError: naming the step, the value and the usual fixes.
    """
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"training loss is {loss} at step {step}: training diverged; lower training.learningRate, "
            "use training.precision fp32, or check the data for rows without targets; nothing was saved as output"
        )
