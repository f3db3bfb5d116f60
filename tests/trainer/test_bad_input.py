"""Bad input fails fast: one line naming the field and the fix, exit 2, before any training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kadapt_trainer.__main__ import main
from kadapt_trainer.config import EXIT_BAD_INPUT
from tests.trainer import tiny
from tests.trainer.conftest import ROOT, trainer_env


def _config(tmp: Path, model: Path, data: Path, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "model": {"uri": str(model)},
        "dataset": {"uri": str(data)},
        "strategy": {"type": "full"},
        "output": {"uri": str(tmp / "out")},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp / "trainer.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture()
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() sets launcher variables; keep them out of the test process."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setenv("KADAPT_PROGRESS_PORT", "0")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES = {
    "missing-data-file": (lambda t, m: _config(t, m, t / "nope.jsonl"), ["dataset.uri", "does not exist"]),
    "wrong-text-field": (
        lambda t, m: _config(t, m, tiny.write_jsonl(t / "d.jsonl", [{"sentence": "a", "label": 1}] * 4)),
        ["dataset.textField 'text'", "available columns: label, sentence"],
    ),
    "wrong-label-field": (
        lambda t, m: _config(t, m, _write(t / "d.csv", "text,category\na,x\nb,y\n")),
        ["dataset.labelField 'label'", "available columns: category, text"],
    ),
    "one-class": (
        lambda t, m: _config(t, m, tiny.write_jsonl(t / "d.jsonl", [{"text": "a b", "label": "x"}] * 10)),
        ["dataset.labelField 'label' has only one class ('x')"],
    ),
    "empty-dataset": (lambda t, m: _config(t, m, _write(t / "d.jsonl", "")), ["dataset.uri", "no rows"]),
    "header-only-csv": (lambda t, m: _config(t, m, _write(t / "d.csv", "text,label\n")), ["no rows"]),
    "model-not-a-model": (
        lambda t, m: _config(
            t, (t / "empty-model").resolve(), tiny.write_jsonl(t / "d.jsonl", tiny.classification_rows(9))
        ),
        ["model.uri", "not a Hugging Face model folder"],
    ),
    "model-missing": (
        lambda t, m: _config(t, t / "no-model", tiny.write_jsonl(t / "d.jsonl", tiny.classification_rows(9))),
        ["model.uri", "does not exist"],
    ),
    "hf-offline": (
        lambda t, m: _config(t, m, tiny.write_jsonl(t / "d.jsonl", tiny.classification_rows(9))),
        ["model.uri hf://org/model", "offline"],
    ),
    "too-many-layers": (
        lambda t, m: _config(t, m, tiny.write_jsonl(t / "d.jsonl", tiny.classification_rows(9))),
        ["strategy.partial.trainableLayers is 7", "2 blocks"],
    ),
    "invalid-config": (lambda t, m: _write(t / "trainer.json", json.dumps({"model": {"uri": "x"}})), ["dataset"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2(
    case: str, tmp_path: Path, tiny_models: dict[str, Path], isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = CASES[case]
    (tmp_path / "empty-model").mkdir()
    config = make(tmp_path, tiny_models["bert"])
    if case == "hf-offline":
        raw = json.loads(config.read_text())
        raw["model"]["uri"] = "hf://org/model"
        config.write_text(json.dumps(raw))
        os.environ["HF_HUB_OFFLINE"] = "1"
    if case == "too-many-layers":
        raw = json.loads(config.read_text())
        raw["strategy"] = {"type": "partial", "partial": {"trainableLayers": 7}}
        config.write_text(json.dumps(raw))
    assert main(["--config", str(config)]) == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kadapt-trainer:")]
    assert len(err) == 1, err
    assert err[0].startswith("kadapt-trainer: error: ")
    for fragment in expected:
        assert fragment in err[0]
    assert not (tmp_path / "out" / "checkpoints").exists(), "no training may start on bad input"


def test_entry_point_exit_code_and_single_stderr_line(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    config = _config(tmp_path, tiny_models["bert"], tiny.write_jsonl(tmp_path / "d.jsonl", [{"txt": "a"}]))
    proc = subprocess.run(
        [sys.executable, "-m", "kadapt_trainer", "--config", str(config)],
        cwd=ROOT, env=trainer_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == EXIT_BAD_INPUT
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"kadapt-trainer: error: dataset.textField 'text' is not a column of {tmp_path / 'd.jsonl'}; "
        "available columns: txt"
    ]


def _nan_model(folder: Path) -> Path:
    """A tiny BERT whose saved embedding LayerNorm is NaN (a corrupted checkpoint): every loss is NaN."""
    import torch
    from transformers import BertModel

    tiny.make_model(folder, "bert", layers=1)
    model = BertModel.from_pretrained(str(folder))
    with torch.no_grad():
        model.embeddings.LayerNorm.weight.fill_(float("nan"))
    model.save_pretrained(str(folder))
    return folder


def test_nan_training_loss_fails_the_job_with_its_cause(
    tmp_path: Path, isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny.write_jsonl(tmp_path / "d.jsonl", tiny.classification_rows(16))
    config = _config(
        tmp_path,
        _nan_model(tmp_path / "nan-bert"),
        data,
        training={"epochs": 1, "globalBatchSize": 8, "microBatchSize": 8},
    )
    assert main(["--config", str(config)]) == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kadapt-trainer:")]
    assert len(err) == 1 and err[0].startswith("kadapt-trainer: error: training loss is nan at step 1"), err
    assert not (tmp_path / "out" / "kadapt-result.json").exists(), "a diverged run must never write a result"


def test_fp16_without_cuda_is_refused_before_the_model_loads(
    tmp_path: Path, tiny_models: dict[str, Path], isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from kadapt_trainer import modeling

    data = tiny.write_jsonl(tmp_path / "d.jsonl", tiny.classification_rows(16))
    config = _config(tmp_path, tiny_models["bert"], data, training={"precision": "fp16"})
    loaded: list[Any] = []
    original = modeling.load_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        loaded.append(args)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("kadapt_trainer.recipe.load_model", spy)
        code = main(["--config", str(config)])
    assert code == EXIT_BAD_INPUT and not loaded
    err = capsys.readouterr().err
    assert "training.precision fp16 needs a CUDA GPU" in err and "use precision fp32" in err


def test_bf16_on_a_gpu_without_bf16_is_refused() -> None:
    from kadapt_trainer.errors import BadInputError
    from kadapt_trainer.modeling import check_precision

    with pytest.raises(BadInputError, match=r"training\.precision bf16 is not supported by this GPU"):
        check_precision("bf16", cuda=True, bf16_supported=False)
    check_precision("bf16", cuda=True, bf16_supported=True)
    check_precision("fp16", cuda=True)
    check_precision("fp32", cuda=False)


def test_dropped_rows_and_warnings_reach_the_log_and_the_result(
    tmp_path: Path, tiny_models: dict[str, Path], isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*tiny.classification_rows(24), {"text": "  ", "label": "alpha"}, {"text": "the cat", "label": None}]
    config = _config(
        tmp_path,
        tiny_models["bert"],
        tiny.write_jsonl(tmp_path / "d.jsonl", rows),
        strategy={"type": "head-only"},
        dataset={"maxLength": 1024},
        training={"epochs": 1, "globalBatchSize": 8, "microBatchSize": 8},
    )
    raw = json.loads(config.read_text())
    raw["strategy"] = {"type": "head-only"}
    config.write_text(json.dumps(raw))
    assert main(["--config", str(config)]) == 0
    result = json.loads((tmp_path / "out" / "kadapt-result.json").read_text())
    assert result["state"] == "succeeded"
    assert result["dropped_rows"] == {"empty_text": 1, "missing_label": 1}
    assert result["warnings"] == [
        "dataset.maxLength 1024 is beyond the model's limit of 64 positions; texts are truncated to 64 tokens"
    ]
    out = capsys.readouterr().out
    assert "kadapt: dropped 2 rows: 1 empty text, 1 missing label" in out
    assert "kadapt: warning: dataset.maxLength 1024" in out


@pytest.mark.parametrize("nproc", [1, 2])
def test_launcher_keeps_exit_2_and_writes_the_termination_message(
    tmp_path: Path, tiny_models: dict[str, Path], nproc: int
) -> None:
    """torchrun turns a worker's exit 2 into 1; the launcher keeps 2 and the one-line cause."""
    from kadapt_trainer.ports import free_port

    config = _config(tmp_path, tiny_models["bert"], tiny.write_jsonl(tmp_path / "d.jsonl", [{"txt": "a"}]))
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [
            sys.executable, "-m", "kadapt_trainer.launch", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "kadapt_trainer", "--config", str(config),
        ],
        cwd=ROOT, env=trainer_env(KADAPT_TERMINATION_LOG=str(term)), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-3000:]
    expected = f"dataset.textField 'text' is not a column of {tmp_path / 'd.jsonl'}; available columns: txt"
    assert term.read_text() == expected + "\n"


def test_launcher_passes_other_failures_through(tmp_path: Path) -> None:
    from kadapt_trainer.errors import record_exit
    from kadapt_trainer.launch import worker_exit

    assert worker_exit(0, tmp_path) == 0
    assert worker_exit(1, tmp_path) == 1  # a crash stays a crash (retryable)
    assert worker_exit(-9, tmp_path) == 137
    record_exit(EXIT_BAD_INPUT, "dataset.uri: x", env={"KADAPT_EXIT_DIR": str(tmp_path), "RANK": "1"})
    assert worker_exit(1, tmp_path) == EXIT_BAD_INPUT


def test_termination_message_is_one_line_and_never_a_stray_dev_file(tmp_path: Path) -> None:
    from kadapt_trainer.errors import termination_log_path, write_termination_message

    target = tmp_path / "term"
    write_termination_message("first line\nsecond", env={"KADAPT_TERMINATION_LOG": str(target)})
    assert target.read_text() == "first line\n"
    if not Path("/dev/termination-log").exists():
        assert termination_log_path(env={}) is None
