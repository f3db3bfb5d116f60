"""``python -m kadapt_trainer.launch ARGS``: torchrun, with the stop exit code preserved.

torchrun forwards SIGTERM to its workers (which checkpoint at the end of the step and exit
143) but then dies of the signal itself with exit code 1, which a Job's podFailurePolicy
cannot tell from a crash. This wrapper takes exactly torchrun's arguments, runs it as a
child, forwards SIGTERM/SIGINT, and exits 143 (``EXIT_STOPPED``) when it was signalled, so
a preempted or budget-suspended gang is not counted as failed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

from kadapt_trainer.config import EXIT_STOPPED


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with ``argv``; map a signalled stop to 143."""
    args = sys.argv[1:] if argv is None else argv
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args])
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    rc = proc.wait()
    if received:
        return EXIT_STOPPED
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
