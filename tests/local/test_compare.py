"""``kadapt compare`` (issue 14, item 6): the same job under several strategies, one table, JSON and a chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml

from kadapt_operator.local.compare import CompareRow, mark, parse_strategies
from tests.local.test_run_plots import assert_png
from tests.local.test_runner import cli
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl


def _row(strategy: str, accuracy: float | None, cost: float, status: str = "succeeded") -> CompareRow:
    return CompareRow(strategy, status, 1, 10, accuracy, None, 1.0, 1.0, cost, "/r")


def test_best_per_cost_and_recommendation() -> None:
    rows = [
        _row("head-only", 0.90, 0.01),
        _row("lora", 0.945, 0.05),
        _row("full", 0.95, 0.2),
        _row("partial", None, 0.1),
    ]
    mark(rows)
    assert [r.strategy for r in rows if r.best_value] == ["head-only"]  # 90 accuracy points per cent
    assert [r.strategy for r in rows if r.recommended] == ["lora"]  # cheapest within a point of the best
    failed = [_row("full", None, 0.2, status="failed")]
    mark(failed)
    assert not failed[0].best_value and not failed[0].recommended


def test_strategies_are_checked() -> None:
    assert parse_strategies("head-only, full,head-only") == ["head-only", "full"]
    with pytest.raises(typer.BadParameter, match="unknown strategy loar; use some of head-only"):
        parse_strategies("head-only,loar")


@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    model = make_model(tmp_path / "models" / "bert", "bert")
    write_jsonl(tmp_path / "data.jsonl", classification_rows(64))
    doc = manifest("cmp", "models/bert", "data.jsonl", epochs=2, output="out/model")  # relative to the manifest
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert model.is_dir()
    run_dir = tmp_path / "cmp"
    done = cli(
        "compare", str(tmp_path / "job.yaml"), "--strategies", "head-only,full", "--run-dir", str(run_dir), "-o", "json"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    rows = {r["strategy"]: r for r in result["strategies"]}
    assert list(rows) == ["head-only", "full"]
    for strategy, row in rows.items():
        assert row["status"] == "succeeded" and row["accuracy"] is not None and row["cost"] > 0
        assert 0 < row["trainable_params"] <= row["total_params"]
        assert Path(row["run_dir"]) == run_dir / strategy
        out = json.loads((run_dir / strategy / "summary.json").read_text())["output"]
        assert out.endswith(f"out/model-{strategy}"), out  # each strategy its own output
    assert rows["head-only"]["trainable_params"] < rows["full"]["trainable_params"]
    assert sum(r["best_value"] for r in rows.values()) == 1 and sum(r["recommended"] for r in rows.values()) == 1
    assert result["recommended"] in rows and result["bestValue"] in rows
    assert json.loads((run_dir / "compare.json").read_text()) == result
    assert result["chart"] == str(run_dir / "compare.png")
    assert_png(run_dir / "compare.png")
