"""Runs several trainer jobs in one process (or one torchrun gang) and writes their reports.

Launching DeepSpeed costs seconds per process, so the strategy matrix shares launches:
``python driver.py CASES.json RESULTS.json`` or the same under ``torchrun``. Tests call
:func:`run_cases`, which launches it and returns the results.
"""

from __future__ import annotations

import json
import os
import subprocess
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


def run_cases(tmp: Path, cases: list[dict[str, Any]], world: int = 1) -> dict[str, Any]:
    """Run the cases in order in one trainer process (or a ``world``-process gloo gang).

    Every case must end without an error (a ``stopped`` case is fine).
    """
    from kadapt_trainer.ports import free_port
    from tests.trainer.conftest import ROOT, trainer_env

    cases_file, results_file = tmp / "cases.json", tmp / "results.json"
    cases_file.write_text(json.dumps(cases))
    cmd = [sys.executable, __file__, str(cases_file), str(results_file)]
    if world > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", f"--nproc-per-node={world}", "--master-addr=127.0.0.1",
                    f"--master-port={free_port()}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=trainer_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results: dict[str, Any] = json.loads(results_file.read_text())
    for case in cases:
        assert "error" not in results[case["name"]], results[case["name"]]["error"]
    return results


def output_weights(out: Path) -> dict[str, Any]:
    """Every tensor of a saved output (model or adapter), by name."""
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    assert tensors, f"no weights in {out}"
    return tensors


def max_weight_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, float]:
    """The tensor that differs most between two outputs with the same names, and by how much."""
    assert a.keys() == b.keys()
    diffs = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a}
    worst = max(diffs, key=lambda k: diffs[k])
    return worst, diffs[worst]


def assert_same_weights(a: dict[str, Any], b: dict[str, Any], atol: float = 1e-6) -> None:
    """Same names, same values to float tolerance; the message names the worst tensor."""
    worst, diff = max_weight_diff(a, b)
    assert diff <= atol, f"{worst} differs by {diff:.3g} (tolerance {atol})"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
