"""Immutable spec fields stay immutable on update, including optional ones being added or removed.

The API server runs a field's own ``self == oldSelf`` rule only when the field is present in both
the old and the new object. These tests evaluate the CRD's rules as the server does on an update
(transition rules with ``oldSelf``), so an optional field without a default that is added or
dropped later must be refused by a rule on the parent object.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kadapt_operator.api import IMMUTABLE
from kadapt_operator.crd import build_crd
from tests.api.crd_tools import update_errors
from tests.conftest import EXAMPLES


def _job(**spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "full.yaml").read_text())
    doc["spec"].pop("image", None)
    doc["spec"].pop("queueName", None)
    doc["spec"].update(spec)
    return doc


def _with(doc: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for key, value in spec.items():
        if value is None:
            out["spec"].pop(key, None)
        else:
            out["spec"][key] = value
    return out


CRD = build_crd()


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (_job(), _with(_job(), image="registry.example.com/trainer:2"), "image"),
        (_job(image="registry.example.com/trainer:1"), _with(_job(), image=None), "image"),
        (_job(), _with(_job(), queueName="gpus"), "queueName"),
        (_job(queueName="gpus"), _with(_job(), queueName=None), "queueName"),
    ],
    ids=["add-image", "remove-image", "add-queue", "remove-queue"],
)
def test_adding_or_removing_an_optional_immutable_field_is_refused(
    old: dict[str, Any], new: dict[str, Any], field: str
) -> None:
    errors = update_errors(CRD, old, new)
    assert any(f"spec.{field} is immutable" in e for e in errors), errors


def test_changing_an_immutable_field_is_refused_and_mutable_ones_change_freely() -> None:
    old = _job(image="registry.example.com/trainer:1", queueName="gpus")
    assert update_errors(CRD, old, _with(old, image="registry.example.com/trainer:2"))
    assert update_errors(CRD, old, _with(old, queueName="other"))
    changed = _with(old, budget={"maxCost": 99}, runPolicy={"suspend": True})
    assert update_errors(CRD, old, changed) == []
    assert update_errors(CRD, old, copy.deepcopy(old)) == []
    assert update_errors(CRD, _job(), _job()) == []


def test_every_optional_immutable_spec_field_has_a_presence_rule() -> None:
    spec = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    optional = sorted(
        name
        for name, prop in spec["properties"].items()
        if IMMUTABLE in prop.get("x-kubernetes-validations", [])
        and name not in spec["required"]
        and "default" not in prop
    )
    assert optional == ["image", "queueName"]
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    for name in optional:
        assert f"has(self.{name}) == has(oldSelf.{name})" in rules
