"""Errors the trainer turns into a one-line message and an exit code."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path


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


#: Where Kubernetes reads a container's termination message (the pod's terminationMessagePath).
TERMINATION_LOG = "/dev/termination-log"
#: Overrides TERMINATION_LOG (the local runner points it into the pod's run folder).
TERMINATION_LOG_ENV = "KADAPT_TERMINATION_LOG"
#: Set by ``kadapt_trainer.launch`` for its workers: a folder where a failing rank records its exit.
EXIT_DIR_ENV = "KADAPT_EXIT_DIR"
#: Kubernetes keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


def termination_log_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The termination-message file: the configured path, else /dev/termination-log when it exists.

    The default is written only when the kubelet created it (inside a container); outside one
    nothing is written, rather than creating a stray file under /dev.
    """
    env = os.environ if env is None else env
    configured = env.get(TERMINATION_LOG_ENV, "").strip()
    if configured:
        return Path(configured)
    default = Path(TERMINATION_LOG)
    return default if default.is_file() else None


def write_termination_message(message: str, env: Mapping[str, str] | None = None) -> None:
    """Write the one-line cause where Kubernetes (or the local runner) reads it; best effort."""
    path = termination_log_path(env)
    if path is None:
        return
    line = (message.strip().splitlines() or [""])[0]
    data = line.encode("utf-8")[:TERMINATION_MESSAGE_LIMIT].decode("utf-8", "ignore")
    with contextlib.suppress(OSError):
        path.write_text(data + "\n", encoding="utf-8")


def record_exit(code: int, message: str, env: Mapping[str, str] | None = None) -> None:
    """Tell the launcher (``KADAPT_EXIT_DIR``) this rank's exit code and cause; best effort."""
    env = os.environ if env is None else env
    folder = env.get(EXIT_DIR_ENV, "").strip()
    if not folder:
        return
    rank = env.get("RANK", "0")
    with contextlib.suppress(OSError):
        (Path(folder) / f"rank-{rank}.json").write_text(json.dumps({"exit_code": code, "message": message}))


def recorded_exits(folder: Path) -> list[tuple[int, str]]:
    """(exit code, message) of every rank that recorded one, lowest rank first."""
    out: list[tuple[int, str]] = []
    for path in sorted(folder.glob("rank-*.json"), key=lambda p: (len(p.name), p.name)):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            raw = json.loads(path.read_text())
            out.append((int(raw["exit_code"]), str(raw["message"])))
    return out
