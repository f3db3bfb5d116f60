"""On success rank 0 writes its final figures to the termination message (issue 13.9).

The operator's status of a finished job comes from this line, not from its last poll of
``/progress``; here a real (head-only, tiny model) run through the worker entry point writes
it, and it agrees with ``kadapt-result.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kadapt_trainer.__main__ import main
from kadapt_trainer.errors import TERMINATION_LOG_ENV, TERMINATION_MESSAGE_LIMIT
from kadapt_trainer.final_summary import FinalSummary
from tests.trainer import tiny


def test_a_successful_run_writes_its_final_summary(
    tmp_path: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "environ", dict(os.environ))  # main() sets launcher variables
    monkeypatch.setenv("KADAPT_PROGRESS_PORT", "0")
    term = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(term))
    config = tmp_path / "trainer.json"
    config.write_text(json.dumps({
        "model": {"uri": str(tiny_models["bert"])},
        "dataset": {"uri": str(tiny.write_jsonl(tmp_path / "d.jsonl", tiny.classification_rows(24)))},
        "strategy": {"type": "head-only"},
        "output": {"uri": str(tmp_path / "out")},
        "training": {"epochs": 1, "globalBatchSize": 8, "microBatchSize": 8},
    }))  # fmt: skip
    assert main(["--config", str(config)]) == 0
    result = json.loads((tmp_path / "out" / "kadapt-result.json").read_text())
    text = term.read_text()
    assert text.endswith("\n") and text.count("\n") == 1 and len(text.encode()) <= TERMINATION_MESSAGE_LIMIT + 1
    summary = FinalSummary.parse(text)
    assert summary is not None
    assert (summary.step, summary.total_steps) == (result["step"], result["total_steps"])
    assert summary.step > 0 and summary.better_than_baseline == result["better_than_baseline"]
    assert summary.eval_metrics == {k: round(v, 6) for k, v in result["eval_metrics"].items()}
    assert summary.output_uri == result["output_uri"] and summary.warnings == result["warnings"]
