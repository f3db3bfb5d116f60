"""``kadapt run`` draws the training curve (issue 14, item 8): a real PNG, named in the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kadapt_operator.local.plots import CURVE_FILE, accuracy_vs_cost, training_curve
from tests.local.test_runner import cli
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: tuple[int, int] = (300, 200)) -> None:
    """A PNG that an image library decodes, of a chart's size (not an empty or broken file)."""
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        assert len(set(image.convert("L").getdata())) > 2, "a blank image"


def test_training_curve_draws_loss_and_metric(tmp_path: Path) -> None:
    points = [
        {"step": 4.0, "epoch": 1.0, "loss": 1.1, "eval_loss": 1.0, "accuracy": 0.5},
        {"step": 8.0, "epoch": 2.0, "loss": 0.7, "eval_loss": 0.8, "accuracy": 0.75},
    ]
    assert_png(training_curve(points, tmp_path / CURVE_FILE, "job"))
    with pytest.raises(ValueError, match="no training-curve point"):
        training_curve([], tmp_path / "empty.png", "job")


def test_accuracy_vs_cost_marks_the_best_value(tmp_path: Path) -> None:
    rows = [
        {"strategy": "head-only", "accuracy": 0.9, "cost": 0.01, "best_value": True},
        {"strategy": "full", "accuracy": 0.95, "cost": 0.2, "best_value": False},
    ]
    assert_png(accuracy_vs_cost(rows, tmp_path / "c.png", "compare", "USD"))
    with pytest.raises(ValueError, match="no strategy finished"):
        accuracy_vs_cost([{"strategy": "full", "accuracy": None, "cost": 1.0}], tmp_path / "n.png", "c", "USD")


@pytest.mark.slow
def test_kadapt_run_writes_the_curve_and_names_it(tmp_path: Path) -> None:
    model = make_model(tmp_path / "bert", "bert")
    data = write_jsonl(tmp_path / "data.jsonl", classification_rows(64))
    doc = manifest("plotted", model, data.name, epochs=3)
    doc["spec"]["training"]["evalEverySteps"] = 3
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    run_dir = tmp_path / "run"
    done = cli("run", str(job), "--run-dir", str(run_dir), "-o", "json", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["trainingCurve"] == str(run_dir / CURVE_FILE)
    assert_png(run_dir / CURVE_FILE)
    result = json.loads((Path(summary["output"]) / "kadapt-result.json").read_text())
    steps = [int(p["step"]) for p in result["curve"]]  # one point per evaluation: every 3 steps and each epoch end
    assert steps == sorted(set(steps)) and steps[-1] == result["step"]
    assert set(range(3, result["step"] + 1, 3)) <= set(steps)
    assert all("eval_loss" in p and "accuracy" in p and p["loss"] > 0 for p in result["curve"])
