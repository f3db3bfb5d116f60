"""`kadapt run` tells the truth about what it did: fresh start, resume, or nothing to do.

Re-applying an unchanged manifest is the everyday GitOps move; locally it is running the same
command twice. A job that already succeeded in its run folder is reported as finished, with
its output, instead of paying for the same training again; a half-written checkpoint does not
make a fresh start look like a resume; and a piped run prints the output path whole.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import yaml
from rich.console import Console

from kadapt_operator.local.runner import (
    RENDERED_FILE,
    LocalRun,
    RunOptions,
    RunStatus,
    RunSummary,
    has_complete_checkpoint,
    report,
)
from kadapt_operator.output import OutputFormat
from kadapt_operator.render import to_yaml
from kadapt_trainer.config import RESULT_FILE, ProgressReport
from tests.conftest import EXAMPLES


def _local_run(tmp_path: Path, epochs: int | None = None) -> tuple[LocalRun, io.StringIO]:
    manifest = tmp_path / "quickstart.yaml"
    doc = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    if epochs is not None:
        doc["spec"]["training"]["epochs"] = epochs
    (tmp_path / "data").mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "data" / "topics.jsonl", tmp_path / "data" / "topics.jsonl")
    manifest.write_text(yaml.safe_dump(doc))
    log = io.StringIO()
    console = Console(file=log, width=200)
    return LocalRun(RunOptions(manifest=manifest, run_dir=tmp_path / "run"), console=console), log


def _finish_earlier_run(local: LocalRun) -> None:
    """What a successful earlier run leaves in the run folder: its rendered objects and result."""
    local.run_dir.mkdir(parents=True, exist_ok=True)
    (local.run_dir / RENDERED_FILE).write_text(to_yaml(local.rendered.objects()))
    local.output_dir.mkdir(parents=True, exist_ok=True)
    result = ProgressReport(
        state="succeeded", step=48, total_steps=48, epoch=4.0, wall_seconds=11.0, eval_metrics={"accuracy": 1.0}
    )
    (local.output_dir / RESULT_FILE).write_text(result.model_dump_json())


def test_a_half_written_checkpoint_is_not_a_resume(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    assert not has_complete_checkpoint(root)
    root.mkdir()
    assert not has_complete_checkpoint(root)
    (root / ".tmp-step-00000010").mkdir()
    (root / ".tmp-step-00000010" / "kadapt-manifest.json").write_text("{}")
    assert not has_complete_checkpoint(root), "a .tmp- folder is skipped by the trainer: a fresh start"
    (root / "step-00000010").mkdir()
    assert not has_complete_checkpoint(root), "no manifest: incomplete"
    (root / "step-00000010" / "kadapt-manifest.json").write_text('{"files": {}}')
    assert has_complete_checkpoint(root)


def test_rerun_of_a_finished_job_reports_it_and_runs_nothing(tmp_path: Path) -> None:
    local, log = _local_run(tmp_path)
    _finish_earlier_run(local)
    summary = local.execute(show_progress=False)
    assert summary.status == RunStatus.SUCCEEDED and summary.exit_code == 0
    assert summary.already_finished and not summary.resumed
    assert summary.output_path == str(local.output_dir)
    assert (summary.steps, summary.total_steps, summary.metrics) == (48, 48, {"accuracy": 1.0})
    assert f"already finished; output at {local.output_dir}" in log.getvalue()
    assert not (local.run_dir / "logs").exists(), "no pod may have been started"
    assert summary.to_json()["alreadyFinished"] is True


def test_a_changed_manifest_trains_again(tmp_path: Path) -> None:
    earlier, _ = _local_run(tmp_path)
    _finish_earlier_run(earlier)
    changed, _ = _local_run(tmp_path, epochs=7)
    assert changed.finished_result() is None
    same, _ = _local_run(tmp_path)
    assert same.finished_result() is not None


def test_piped_output_prints_the_whole_output_path(tmp_path: Path) -> None:
    path = "/very/long/" + "/".join(f"folder-{i:02d}" for i in range(12)) + "/topics-minilm"
    summary = RunSummary(
        job="quickstart", status=RunStatus.SUCCEEDED, run_dir=str(tmp_path), exit_code=0, output_path=path
    )
    out, err = io.StringIO(), io.StringIO()
    report(summary, OutputFormat.TEXT, Console(file=out, width=60), Console(file=err, width=60))
    assert f"output: {path}\n" in out.getvalue()
