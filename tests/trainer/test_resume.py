"""Kill tests: SIGTERM and SIGKILL mid-run, a truncated checkpoint, then resume to the same end.

One trainer process at a time, driven through its real entry point and watched through its
real ``/progress`` endpoint (which this test also checks, with ``/metrics`` and ``/healthz``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kadapt_trainer.checkpoint import MANIFEST_FILE, complete_checkpoints, step_of
from kadapt_trainer.config import EXIT_STOPPED, RESULT_FILE
from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV
from kadapt_trainer.ports import free_port
from tests.harness.wait import wait_for
from tests.trainer.conftest import ROOT, trainer_env

pytestmark = pytest.mark.slow

TOTAL_STEPS = 160
EVERY = 10
METRICS = (
    "kadapt_trainer_steps_total",
    "kadapt_trainer_target_steps",
    "kadapt_trainer_epoch",
    "kadapt_trainer_train_loss",
    "kadapt_trainer_eval_loss",
    "kadapt_trainer_eval_accuracy",
    "kadapt_trainer_eval_perplexity",
    "kadapt_trainer_samples_per_second",
    "kadapt_trainer_tokens_per_second",
    "kadapt_trainer_step_duration_seconds_bucket",
    "kadapt_trainer_trainable_parameters",
    "kadapt_trainer_parameters",
    "kadapt_trainer_last_checkpoint_timestamp_seconds",
)


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return resp.status, resp.read().decode()


class Trainer:
    """One ``python -m kadapt_trainer`` process with its progress port."""

    def __init__(self, config: Path, log: Path, launcher: list[str] | None = None, hold: int | None = None) -> None:
        self.port = free_port()
        # Held after step ``hold``: the signal the test sends lands mid-run however fast this machine trains.
        held = {HOLD_AFTER_STEP_ENV: str(hold)} if hold else {}
        self.log = log
        self._fh = open(log, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(
            [*(launcher or [sys.executable]), "-m", "kadapt_trainer", "--config", str(config)],
            cwd=ROOT,
            env=trainer_env(KADAPT_PROGRESS_PORT=str(self.port), **held),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def progress(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(_get(self.port, "/progress")[1]))
        except OSError:
            return None

    def wait_for_step(self, step: int, timeout: float = 240) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            report = self.progress()
            return report if report and report["step"] >= step else None

        return wait_for(reached, timeout, 0.02, f"step {step}", process=self.proc, output=self.output)

    def wait(self, timeout: float = 240) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._fh.close()
        return rc

    def output(self) -> str:
        return self.log.read_text()


def _config(tmp: Path, tiny_models: dict[str, Path], tiny_data: dict[str, Path]) -> Path:
    cfg = {
        "model": {"uri": str(tiny_models["gpt2"])},
        "dataset": {"uri": str(tiny_data["cls-train"]), "validationUri": str(tiny_data["cls-val"])},
        "strategy": {"type": "full"},
        "training": {
            "maxSteps": TOTAL_STEPS,
            "globalBatchSize": 16,
            "microBatchSize": 8,
            "learningRate": 1e-3,
            "earlyStopping": {"enabled": False},  # the test needs a run long enough to stop in
        },
        "checkpoint": {"everySteps": EVERY, "keep": 3},
        "output": {"uri": str(tmp / "out")},
    }
    path = tmp / "trainer.json"
    path.write_text(json.dumps(cfg))
    return path


def _resumed_from(output: str) -> int:
    match = re.search(r"resumed from \S*step-(\d+) at step (\d+)", output)
    assert match, f"no resume line in:\n{output[-3000:]}"
    assert int(match.group(1)) == int(match.group(2))
    return int(match.group(1))


def test_sigterm_sigkill_truncation_resume(tmp_path: Path, tiny_models: Any, tiny_data: Any) -> None:
    config = _config(tmp_path, tiny_models, tiny_data)
    ckpts = tmp_path / "out" / "checkpoints"

    # 1. SIGTERM mid-run: a checkpoint at the step it stopped on, exit 143
    first = Trainer(config, tmp_path / "run1.log", hold=25)
    report = first.wait_for_step(25)
    status, body = _get(first.port, "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    _, metrics = _get(first.port, "/metrics")
    for name in METRICS:
        assert re.search(rf"^{name}(\{{[^}}]*\}})? ", metrics, re.M), f"{name} missing from /metrics"
    assert "gpu" not in metrics, "GPU metrics must be absent on a CPU-only machine"
    assert report["total_steps"] == TOTAL_STEPS and report["strategy"] == "full"
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait() == EXIT_STOPPED, first.output()
    stopped = int(re.search(r"stopped at step (\d+)", first.output()).group(1))  # type: ignore[union-attr]
    assert 25 <= stopped < TOTAL_STEPS
    newest = complete_checkpoints(ckpts)
    assert step_of(newest[0]) == stopped, "SIGTERM must checkpoint the step it stopped on"
    assert len(newest) <= 3 + 1, "keep: 3, plus the best evaluation's"

    # 2. truncate the newest checkpoint: the restart falls back to the previous one
    manifest = json.loads((newest[0] / MANIFEST_FILE).read_text())["files"]
    biggest = max(manifest, key=manifest.get)
    with open(newest[0] / biggest, "r+b") as fh:
        fh.truncate(manifest[biggest] // 2)
    previous = step_of(newest[1])
    assert previous is not None and previous < stopped
    second = Trainer(config, tmp_path / "run2.log", hold=previous + 25)
    second.wait_for_step(previous + 25)
    assert _resumed_from(second.output()) == previous

    # 3. SIGKILL: no chance to save; the restart takes the newest complete checkpoint
    second.proc.kill()
    assert second.wait() == -signal.SIGKILL
    survivor = step_of(complete_checkpoints(ckpts)[0])
    assert survivor is not None and survivor > previous
    third = Trainer(config, tmp_path / "run3.log")
    assert third.wait() == 0, third.output()
    assert _resumed_from(third.output()) == survivor
    result = json.loads((tmp_path / "out" / RESULT_FILE).read_text())
    assert result["state"] == "succeeded"
    assert result["step"] == result["total_steps"] == TOTAL_STEPS
    assert result["eval_metrics"]["accuracy"] > 0.6


def test_gang_sigterm_through_the_launcher(tmp_path: Path, tiny_models: Any, tiny_data: Any) -> None:
    """A 2-process gang under torchrun stops together on SIGTERM; the launcher exits 143."""
    config = _config(tmp_path, tiny_models, tiny_data)
    launcher = [
        sys.executable, "-m", "kadapt_trainer.launch", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
    ]  # fmt: skip
    gang = Trainer(config, tmp_path / "gang.log", launcher=launcher, hold=12)
    report = gang.wait_for_step(12)
    assert report["world_size"] == 2
    gang.proc.send_signal(signal.SIGTERM)
    assert gang.wait() == EXIT_STOPPED, gang.output()
    stopped = int(re.search(r"stopped at step (\d+)", gang.output()).group(1))  # type: ignore[union-attr]
    assert step_of(complete_checkpoints(tmp_path / "out" / "checkpoints")[0]) == stopped
