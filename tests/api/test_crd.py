"""The committed CRD is generated from the model, is a valid CRD, and carries its rules."""

from __future__ import annotations

import kubernetes_validate
import yaml
from typer.testing import CliRunner

from kadapt_operator.cli import app
from kadapt_operator.crd import CRD_FILE, build_crd, render_crd_yaml

K8S_VERSION = "1.32"


def test_committed_crd_matches_the_model() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), "run `kadapt crd > crds/adaptationjobs.kadapt.dev.yaml`"


def test_kadapt_crd_prints_the_committed_file() -> None:
    result = CliRunner().invoke(app, ["crd"])
    assert result.exit_code == 0
    assert result.output == CRD_FILE.read_text()


def test_crd_passes_the_official_schema() -> None:
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), K8S_VERSION, strict=True)


def test_names_printer_columns_and_status_subresource() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "AdaptationJob", "adaptationjobs", ["aj"], ["kadapt"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Strategy", "Phase", "Progress", "Loss", "Cost", "Age",
    ]


def _rules(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        return found + [r for v in node.values() for r in _rules(v)]
    if isinstance(node, list):
        return [r for v in node for r in _rules(v)]
    return []


def test_cel_rules_present() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = _rules(spec)
    assert any("self.type != 'partial'" in r for r in rules)
    assert any("has(self.lora)" in r for r in rules)
    assert any("globalBatchSize % self.microBatchSize" in r for r in rules)
    assert rules.count("self == oldSelf") >= 8  # immutable fields
    for mutable in ("budget", "runPolicy"):
        assert "x-kubernetes-validations" not in spec["properties"][mutable]


def test_structural_schema_shape() -> None:
    """No JSON-Schema-only constructs that Kubernetes rejects in a structural schema."""
    text = render_crd_yaml()
    for forbidden in ("$ref", "$defs", "anyOf", "additionalProperties: false", "title:", "const:"):
        assert forbidden not in text, forbidden
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["training"]["default"] == {}
    assert spec["properties"]["budget"]["properties"]["maxCost"]["exclusiveMinimum"] is True
    assert set(spec["required"]) == {"model", "dataset", "output"}
