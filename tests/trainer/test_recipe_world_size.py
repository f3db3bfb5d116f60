"""Resume at another world size (issue 12, item 2): portable, said so, or refused naming both sizes.

A 2-process gang stops mid-run (as on Ctrl-C or SIGTERM), then the same job resumes on 1 rank:

* ZeRO-0 (fp32): the whole state is portable; the run continues exactly, so with dropout off
  it ends where a 1-rank run from scratch ends (issue 12.1 makes the steps equal).
* ZeRO-2: the optimizer state is partitioned per rank; the weights resume, the optimizer
  restarts, the schedule continues, and log, ``/progress`` and the result say so.
* ZeRO-3: the weights are partitioned too; the trainer exits 2 naming both world sizes.

In every case the reported ``resumed_from_step`` is what happened, and rotation keeps the
checkpoints of the current run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kadapt_trainer.checkpoint import complete_checkpoints, saved_world_size, step_of
from kadapt_trainer.config import EXIT_BAD_INPUT
from tests.trainer import tiny
from tests.trainer.conftest import ROOT, trainer_env
from tests.trainer.driver import max_weight_diff, output_weights, run_cases

pytestmark = pytest.mark.slow

STOP_AT = 5  # the stop lands after the next step
TOTAL = 12  # 1 epoch of 96 / 8
#: See test_recipe_batching.ZERO_GRADIENT: a tensor whose gradient is rounding noise.
ZERO_GRADIENT = ("attention.self.key.bias",)


def _config(out: Path, model: Path, data: dict[str, Path], zero: int) -> dict[str, Any]:
    return {
        "model": {"uri": str(model)},
        "dataset": {"uri": str(data["cls-train"]), "validationUri": str(data["cls-val"]), "maxLength": 32},
        "strategy": {"type": "full"},
        "training": {
            "epochs": 1,
            "globalBatchSize": 8,
            "microBatchSize": 2,
            "learningRate": 1e-3,
            "warmupRatio": 0.25,
            "earlyStopping": {"enabled": False},
            "lpFt": False,
        },
        "deepspeed": {"zeroStage": zero},
        "checkpoint": {"everySteps": 2, "keep": 2},
        "output": {"uri": str(out)},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_data: dict[str, Path]) -> dict[str, Any]:
    """Stop three jobs on 2 ranks; resume two of them on 1 rank, next to a 1-rank run from scratch."""
    tmp = tmp_path_factory.mktemp("world")
    model = tiny.make_model(tmp / "bert", "bert", dropout=0.0)
    cfg = {zero: _config(tmp / f"z{zero}", model, tiny_data, zero) for zero in (0, 2, 3)}
    (tmp / "gang").mkdir()
    gang = run_cases(
        tmp / "gang", [{"name": f"z{z}", "config": cfg[z], "stop_at": STOP_AT} for z in (0, 2, 3)], world=2
    )
    (tmp / "single").mkdir()
    single = run_cases(
        tmp / "single",
        [
            {"name": "z0", "config": cfg[0]},
            {"name": "z2", "config": cfg[2]},
            {"name": "z0-scratch", "config": _config(tmp / "scratch", model, tiny_data, 0)},
        ],
    )
    (tmp / "z3.json").write_text(json.dumps(cfg[3]))
    z3 = subprocess.run(
        [sys.executable, "-m", "kadapt_trainer", "--config", str(tmp / "z3.json")],
        cwd=ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return {"tmp": tmp, "gang": gang, "single": single, "z3": z3}


def _compared(out: Path) -> dict[str, Any]:
    return {k: v for k, v in output_weights(out).items() if not k.endswith(ZERO_GRADIENT)}


def _current_run_checkpoints(root: Path, world: int) -> None:
    """Rotation kept the newest checkpoints of the run that just ended (written at ``world``)."""
    kept = complete_checkpoints(root)
    assert [saved_world_size(p) for p in kept] == [world, world], [p.name for p in kept]
    assert step_of(kept[0]) == TOTAL


def test_zero0_resumes_fully_at_another_world_size(runs: dict[str, Any]) -> None:
    stopped = runs["gang"]["z0"]["stopped"]
    assert STOP_AT <= stopped < TOTAL
    result = runs["single"]["z0"]
    report = result["report"]
    assert report["resumed_from_step"] == stopped and report["step"] == TOTAL
    assert len(result["losses"]) == TOTAL - stopped
    assert any("written by 2 rank(s), this run has 1" in w and "optimizer and schedule restored" in w
               for w in report["warnings"]), report["warnings"]  # fmt: skip
    # the whole state carried over: the same end as one rank from scratch
    scratch = runs["single"]["z0-scratch"]
    assert scratch["report"]["resumed_from_step"] is None
    assert result["losses"] == pytest.approx(scratch["losses"][stopped:], rel=1e-4)
    resumed, fresh = _compared(runs["tmp"] / "z0"), _compared(runs["tmp"] / "scratch")
    worst, diff = max_weight_diff(resumed, fresh)
    assert diff < 1e-4, f"{worst} differs by {diff:.3g}"
    _current_run_checkpoints(runs["tmp"] / "z0" / "checkpoints", world=1)


def test_zero2_resumes_weights_and_says_the_optimizer_restarted(runs: dict[str, Any]) -> None:
    stopped = runs["gang"]["z2"]["stopped"]
    result = runs["single"]["z2"]
    report = result["report"]
    assert report["resumed_from_step"] == stopped and report["step"] == TOTAL
    assert len(result["losses"]) == TOTAL - stopped
    note = [w for w in report["warnings"] if "written by 2 rank(s), this run has 1" in w]
    assert note and "optimizer state restarted" in note[0], report["warnings"]
    result_file = json.loads((runs["tmp"] / "z2" / "kadapt-result.json").read_text())
    assert result_file["resumed_from_step"] == stopped and note[0] in result_file["warnings"]
    # the weights did carry over: the first loss after the resume is the stopped run's level, not the start's
    assert result["losses"][0] < runs["single"]["z0-scratch"]["losses"][0]
    _current_run_checkpoints(runs["tmp"] / "z2" / "checkpoints", world=1)


def test_zero3_refuses_with_both_world_sizes(runs: dict[str, Any]) -> None:
    proc = runs["z3"]
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("kadapt-trainer: error:")]
    assert line and "written by 2 rank(s)" in line[0] and "this run has 1" in line[0], proc.stderr[-3000:]
    assert "resumed" not in proc.stdout
    assert not (runs["tmp"] / "z3" / "kadapt-result.json").exists()
    # nothing was lost: the gang's checkpoints are still there for a run at the right size
    assert all(saved_world_size(p) == 2 for p in complete_checkpoints(runs["tmp"] / "z3" / "checkpoints"))
