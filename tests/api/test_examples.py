"""Every example is accepted, and every invalid example rejected, by both the model and the CRD."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kadapt_operator.cli import app
from kadapt_operator.crd import build_crd
from kadapt_operator.validation import SpecInvalid, load_jobs
from tests.api.crd_tools import crd_errors
from tests.conftest import EXAMPLES

VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def expected_path(path: Path) -> str:
    match = re.search(r"^# expect-error: (\S+)$", path.read_text(), re.M)
    assert match, f"{path} must say which field is wrong in an '# expect-error: <path>' comment"
    return match.group(1)


def test_example_sets_are_not_empty() -> None:
    assert len(VALID) >= 5
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_accepted_by_model_and_crd(path: Path) -> None:
    jobs = load_jobs(path)
    assert jobs
    for doc in yaml.safe_load_all(path.read_text()):
        assert crd_errors(build_crd(), doc) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_rejected_by_model_naming_the_field(path: Path) -> None:
    with pytest.raises(SpecInvalid) as info:
        load_jobs(path)
    paths = [e.path for e in info.value.errors]
    assert expected_path(path) in paths, info.value.errors
    for err in info.value.errors:
        assert len(err.message) > 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_rejected_by_crd(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    errors = crd_errors(build_crd(), doc)
    assert errors, f"the CRD accepts {path.name}, which the Python model rejects"
    field = expected_path(path).removeprefix("spec").lstrip(".").split(".")[0]
    assert any(field in e for e in errors), errors


def test_cli_validate_exit_codes_and_text() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", *map(str, VALID)])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["validate", str(EXAMPLES / "invalid" / "typo-field.yaml")])
    assert bad.exit_code == 1
    assert "spec.strategy.lora.rnak" in bad.output
    assert "did you mean 'rank'" in bad.output


def test_cli_validate_json_lists_every_error(tmp_path: Path) -> None:
    manifest = tmp_path / "two-errors.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kadapt.dev/v1alpha1",
                "kind": "AdaptationJob",
                "metadata": {"name": "two"},
                "spec": {"model": {"uri": "pvc://m/x"}, "resources": {"workers": 0}, "output": {"uri": "/o"}},
            }
        )
    )
    result = CliRunner().invoke(app, ["validate", "--output", "json", str(manifest)])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False
    paths = {e["path"] for e in report["files"][0]["errors"]}
    assert paths == {"spec.dataset", "spec.resources.workers"}


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output
