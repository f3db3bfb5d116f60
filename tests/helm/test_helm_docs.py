"""The install guide's Helm commands and values render, so the docs cannot drift from the chart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.helm.chart import CHART_DIR, MONITORING_APIS, render

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _install_section() -> str:
    text = README.read_text()
    return text.split("<!-- install:start -->", 1)[1].split("<!-- install:end -->", 1)[0]


class _Guide:
    """The README's "Install on a cluster" section."""

    @staticmethod
    def read_text() -> str:
        return _install_section()


GUIDE = _Guide()


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _helm_commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith(("helm install", "helm upgrade"))]


def _sets(command: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for expr in re.findall(r"--set '?([^' ]+)'?", command.replace("$REGISTRY", "registry.example.com/ml")):
        _merge(values, helm_python.parse_set_string(expr))
    return values


@pytest.mark.parametrize("doc", [GUIDE, CHART_DIR / "README.md"], ids=["README install section", "chart README"])
def test_documented_helm_commands_render(doc: Path | _Guide) -> None:
    commands = _helm_commands(doc.read_text())
    assert commands
    for command in commands:
        assert "charts/kadapt" in command and "-n kadapt-system" in command
        r = render(_sets(command))
        assert r.one("Deployment")


def test_install_guide_watches_the_namespace_of_its_example() -> None:
    import yaml

    command = next(c for c in _helm_commands(GUIDE.read_text()) if c.startswith("helm install"))
    namespaces = render(_sets(command)).one("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    example = yaml.safe_load((ROOT / "examples" / "lora.yaml").read_text())
    assert example["metadata"]["namespace"] in namespaces
    assert "examples/lora.yaml" in GUIDE.read_text()


def test_every_value_in_the_modes_table_renders() -> None:
    table = GUIDE.read_text().split("Other modes, as values", 1)[1].split("\n\n", 2)[1]
    exprs = re.findall(r"`([A-Za-z][\w.-]*=[^`]+)`", table)
    assert len(exprs) >= 6
    for expr in exprs:
        values = helm_python.parse_set_string(expr)
        r = render(values, api_versions=MONITORING_APIS)
        assert r.one("Deployment"), expr
