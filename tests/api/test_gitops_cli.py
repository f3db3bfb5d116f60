"""`kadapt validate` and `kadapt render` over a GitOps folder: other kinds are skipped and counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from kadapt_operator.cli import app
from tests.conftest import EXAMPLES

SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"}, "stringData": {"HF_TOKEN": "x"}}
CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "datasets"},
    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
}
KUSTOMIZATION = {"resources": ["jobs.yaml", "storage.yaml"], "namespace": "team-assistant"}


def _repo(root: Path) -> Path:
    """A GitOps folder: a multi-document file mixing a job with a Secret, a claim, a kustomization."""
    repo = root / "apps" / "team-assistant"
    repo.mkdir(parents=True)
    job = yaml.safe_load((EXAMPLES / "lora.yaml").read_text())
    (repo / "jobs.yaml").write_text(yaml.safe_dump_all([SECRET, job]))
    (repo / "storage.yml").write_text(yaml.safe_dump(CLAIM))
    (repo / "kustomization.yaml").write_text(yaml.safe_dump(KUSTOMIZATION))
    nested = repo / "more"
    nested.mkdir()
    shutil.copy(EXAMPLES / "auto.yaml", nested / "auto.yaml")
    hidden = root / ".git"
    hidden.mkdir()
    (hidden / "junk.yaml").write_text("not: [valid")
    return root


def test_validate_a_folder_skips_other_kinds_and_counts_them(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    result = CliRunner().invoke(app, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    assert "2 AdaptationJob(s) in 4 file(s)" in result.output
    assert "skipped 3 documents of other kinds (1 Kustomization, 1 PersistentVolumeClaim, 1 Secret)" in result.output
    assert "junk.yaml" not in result.output


def test_validate_json_lists_what_each_file_skipped(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    result = CliRunner().invoke(app, ["validate", "-o", "json", str(root / "apps" / "team-assistant" / "jobs.yaml")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["skipped"] == 1
    assert report["files"][0]["skipped"] == ["Secret/hf-token"]
    assert report["files"][0]["jobs"] == [yaml.safe_load((EXAMPLES / "lora.yaml").read_text())["metadata"]["name"]]


def test_validate_a_folder_still_reports_bad_jobs_and_jobs_without_kind(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    shutil.copy(EXAMPLES / "invalid" / "typo-field.yaml", root / "apps" / "typo.yaml")
    no_kind = yaml.safe_load((EXAMPLES / "lora.yaml").read_text())
    del no_kind["kind"]
    (root / "apps" / "no-kind.yaml").write_text(yaml.safe_dump(no_kind))
    result = CliRunner().invoke(app, ["validate", str(root)])
    assert result.exit_code == 1
    assert "spec.strategy.lora.rnak" in result.output
    assert "no-kind.yaml: invalid" in result.output


def test_render_a_folder_prints_only_kadapt_objects_and_says_what_it_skipped(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    result = CliRunner().invoke(app, ["render", str(root)])
    assert result.exit_code == 0, result.output
    assert "kadapt render: skipped 3 documents of other kinds" in result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted({o["kind"] for o in objects}) == ["ConfigMap", "Job", "Service"]
    assert len(objects) == 6
