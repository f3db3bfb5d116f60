"""Runs several trainer jobs in one process (or one torchrun gang) and writes their reports.

Launching DeepSpeed costs seconds per process, so the strategy matrix shares launches:
``python driver.py CASES.json RESULTS.json`` or the same under ``torchrun``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def main(cases_file: str, results_file: str) -> int:
    """Run every case; rank 0 writes {name: {report, losses} | {stopped, losses} | {error}}.

    A case with ``stop_at: N`` raises the stop signal after step N, as SIGTERM would (the
    trainer checkpoints at the end of the step after and stops); a later case with the same
    config resumes from that checkpoint.
    """
    from kadapt_trainer.checkpoint import StopSignal
    from kadapt_trainer.config import TrainerConfig
    from kadapt_trainer.recipe import Stopped, run

    cases: list[dict[str, Any]] = json.loads(Path(cases_file).read_text())
    results: dict[str, Any] = {}
    for case in cases:
        losses: list[float] = []
        stop = StopSignal()
        stop_at = case.get("stop_at")

        def on_step(
            step: int, loss: float, out: list[float] = losses, stop: StopSignal = stop, at: Any = stop_at
        ) -> None:
            out.append(loss)
            stop.requested = stop.requested or step == at

        try:
            cfg = TrainerConfig.model_validate(case["config"])
            report = run(cfg, stop=stop, serve=False, on_step=on_step)
            results[case["name"]] = {"report": report.model_dump(), "losses": losses}
        except Stopped as exc:
            results[case["name"]] = {"stopped": exc.report.step, "losses": losses}
        except Exception as exc:
            traceback.print_exc()
            results[case["name"]] = {"error": f"{type(exc).__name__}: {exc}", "losses": losses}
    if os.environ.get("RANK", "0") == "0":
        Path(results_file).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
