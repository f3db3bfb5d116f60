"""Smoke test of benchmarks/quality_bench.py at toy sizes: the report's shape, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.benchmarks.markers import needs_scattertext

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, needs_scattertext]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("quality-bench")
    out = tmp / "report.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "KADAPT_PROGRESS_PORT": "0"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/quality_bench.py"), "--quick", "--json", str(out), "--work", str(tmp)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| strategy | kadapt (defaults)" in proc.stdout  # the markdown table is printed
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def test_every_run_is_scored_on_the_same_test_split(report: dict[str, Any]) -> None:
    assert set(report["sizes"]) == {"8", "12"}  # every strategy and auto at each size
    n_test = report["data"]["test"]
    assert n_test == 3 * report["settings"]["test_per_class"]
    for size in report["sizes"].values():
        assert set(size["kadapt"]) == {"head-only", "full", "auto"}
        assert set(size["baselines"]) == {"head-only", "full"}
        for run in [*size["kadapt"].values(), *size["baselines"].values()]:
            assert 0.0 <= run["accuracy"] <= 1.0 and 0.0 <= run["macro_f1"] <= 1.0
            assert run["wall_seconds"] > 0
            # accuracies are counts over the same test split
            assert abs(run["accuracy"] * n_test - round(run["accuracy"] * n_test)) < 1e-6
        for run in size["kadapt"].values():  # the test split's scoring is timed apart, left out of the cost
            assert run["test_scoring_cpu_seconds"] > 0
            assert run["cpu_seconds"] + run["test_scoring_cpu_seconds"] == pytest.approx(run["job_cpu_seconds"])
            assert run["wall_seconds"] < run["job_wall_seconds"]


def test_kadapt_runs_record_what_they_used(report: dict[str, Any]) -> None:
    size = report["sizes"]["8"]
    head, full = size["kadapt"]["head-only"], size["kadapt"]["full"]
    assert head["strategy"] == "head-only" and head["steps"] == 1 and head["probe_c"] is not None
    assert full["strategy"] == "full" and full["training"]["learningRate"] == 5e-5
    assert "learningRate" in full["training"]["defaulted"]
    for size in report["sizes"].values():
        auto = size["kadapt"]["auto"]
        assert auto["decision"]["chosen"] == auto["strategy"] == report["auto_choices"][str(size["per_class"])]
        assert {c["strategy"] for c in auto["decision"]["candidates"]} == {"head-only", "lora", "partial", "full"}


def test_plan_against_measured_and_verdicts(report: dict[str, Any]) -> None:
    steps = report["step_times"]  # kadapt plan --local's calibration ran (a trainer process)
    assert steps is not None and steps["startup"] > steps["imports"] > 0
    assert 0 < steps["features"] < steps["forward"]  # per example, against a no-grad micro-batch
    for size in report["sizes"].values():
        plan = size["plan"]
        assert set(plan["seconds"]) == {"head-only", "lora", "partial", "full"}
        assert plan["source"].startswith("measured") and plan["imports_left_out"] == steps["imports"]
        v = size["verdicts"]
        for key in ("head_only_vs_logreg", "head_only_time_vs_full", "full_vs_baseline", "auto_vs_best"):
            assert isinstance(v[key], float)
        assert isinstance(v["head_only_met"], bool) and isinstance(v["auto_met"], bool)
        assert set(v["plan_over_measured_cpu"]) == {"head-only", "full", "auto"}
        assert isinstance(v["plan_within_2x"], bool)
