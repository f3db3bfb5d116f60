"""``kadapt run`` on bad input: the trainer's own cause, from its termination message, at once.

Two local "pods" (a gang): each runs the launcher around torchrun; a bad-input exit (2) of the
trainer survives torchrun, its one-line cause lands in the pod's termination-message file
(the local stand-in for /dev/termination-log), and the run fails once with that cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.local.test_runner import cli, write_manifest
from tests.trainer.tiny import make_model, manifest, write_jsonl

pytestmark = pytest.mark.slow


def test_bad_input_fails_the_run_at_once_with_the_trainers_cause(tmp_path: Path) -> None:
    model = make_model(tmp_path / "bert", "bert")
    rows = [{"text": f"the cat {k}", "label": 1} for k in ("alpha", "beta")] * 8
    rows.append({"text": "the dog", "label": "positive"})  # line 17: a name among numbers
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    job = write_manifest(tmp_path / "job.yaml", manifest("mixed", model, data.name))
    done = cli("run", str(job), "--workers", "2", "--run-dir", str(tmp_path / "run"), "-o", "json", "--no-progress")
    assert done.returncode == 1, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed"
    cause = summary["cause"]
    assert cause.startswith("dataset.labelField 'label': labels of different kinds: "), cause
    assert f"'positive' ({data} line 17)" in cause and "is a number" in cause and "is a name" in cause
    pods = tmp_path / "run" / "pods"
    messages = {p.name: (p / "termination-log").read_text() for p in pods.iterdir() if (p / "termination-log").exists()}
    assert messages and all(m == cause + "\n" for m in messages.values()), messages
    for log in (tmp_path / "run" / "logs").glob("mixed-*.log"):
        text = log.read_text()
        assert f"kadapt-trainer: error: {cause}" in text
        # torchrun prints its own ChildFailedError; the trainer itself never shows a traceback.
        frames = [line for line in text.splitlines() if line.strip().startswith('File "')]
        assert not [f for f in frames if "kadapt_trainer" in f], frames
        assert not log.with_name(log.name + ".previous").exists(), "the gang was started again"
