"""``python -m kadapt_trainer.launch ARGS``: torchrun, with the trainer's exit codes preserved.

torchrun turns every worker failure into its own exit code 1, and exits 1 when it is itself
signalled even though its workers checkpointed and stopped cleanly. Kubernetes (the Job's
podFailurePolicy, the operator) and ``kadapt run`` decide by the exit code, so this wrapper
takes exactly torchrun's arguments, runs it as a child, and:

- exits 143 (``EXIT_STOPPED``) when it was signalled (SIGTERM/SIGINT are forwarded), so a
  preempted or budget-suspended gang is not counted as failed;
- exits 2 (``EXIT_BAD_INPUT``) when a worker failed on bad input or a diverged loss (each
  rank records its exit in ``KADAPT_EXIT_DIR``, a folder this wrapper creates), and writes
  that worker's one-line cause to the termination message, so the failure is permanent and
  its cause reaches the job's status instead of a gang restart with "exit code 1".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from kadapt_trainer.config import EXIT_BAD_INPUT, EXIT_STOPPED
from kadapt_trainer.errors import EXIT_DIR_ENV, recorded_exits, write_termination_message


def worker_exit(rc: int, exit_dir: Path) -> int:
    """The pod's exit code from torchrun's and the ranks' recorded ones.

    A rank's bad-input exit (2) wins over torchrun's generic 1; its cause becomes the
    termination message.
    """
    if rc == 0:
        return 0
    for code, message in recorded_exits(exit_dir):
        if code == EXIT_BAD_INPUT:
            write_termination_message(message)
            return EXIT_BAD_INPUT
    return rc if rc >= 0 else 128 - rc


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with ``argv``; map a signalled stop to 143 and a worker's bad input to 2."""
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="kadapt-exit-") as exit_dir:
        env = {**os.environ, EXIT_DIR_ENV: exit_dir}
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], env=env)
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
        return worker_exit(rc, Path(exit_dir))


if __name__ == "__main__":
    sys.exit(main())
