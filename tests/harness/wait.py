"""The one wait of the tests: poll for a state, never sleep for a time.

Light on purpose (standard library only): the trainer tests use it as well as the operator
tests, whose :mod:`tests.harness.emulator` re-exports it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 20.0,
    interval: float = 0.2,
    message: str = "",
    *,
    process: subprocess.Popen[Any] | None = None,
    output: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``message`` after ``timeout``.

    The one wait of the tests (``Cluster.wait_for`` is this, with a shorter poll interval):
    tests wait on a state, never on time.

    Args:
        process: the process that should bring the state about; when it exits first, fail at
            once (it never will) instead of at the timeout.
        output: what to show with a failure (e.g. that process's log), its last 4000 characters.
    """
    what = message or repr(predicate)
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited ({process.returncode}) before {what}{_tail(output)}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r}){_tail(output)}")


def _tail(output: Callable[[], str] | None) -> str:
    return f":\n{output()[-4000:]}" if output is not None else ""
