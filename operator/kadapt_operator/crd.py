"""Generate the AdaptationJob CRD from the pydantic models (``kadapt crd``).

Pydantic emits JSON Schema (draft 2020-12); Kubernetes wants a *structural* OpenAPI v3.0
schema. This module inlines references, turns ``Optional[X]`` into ``X``, converts numeric
exclusive bounds, gives nested objects ``default: {}`` so that their own defaults apply,
bounds lists and strings so that CEL cost estimation passes, and strips defaults from
status. ``crds/adaptationjobs.kadapt.dev.yaml`` is this output, and a test fails if it drifts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from kadapt_operator.api import (
    API_GROUP,
    API_VERSION,
    CATEGORY,
    IMMUTABLE,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    AdaptationJobSpec,
    AdaptationJobStatus,
)
from kadapt_trainer.config import cel

CRD_NAME = f"{PLURAL}.{API_GROUP}"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / f"{CRD_NAME}.yaml"

_DROP_KEYS = {"title"}
_MAX_ITEMS = 64
_MAX_STRING = 4096

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Strategy", "type": "string", "jsonPath": ".status.strategy.resolved",
     "description": "Resolved adaptation strategy"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "number", "jsonPath": ".status.progress.percent",
     "description": "Percent of optimizer steps done"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss", "description": "Latest training loss"},
    {"name": "Cost", "type": "number", "jsonPath": ".status.cost.costSoFar", "description": "GPU cost so far"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _structural(node: Any, defs: dict[str, Any], *, status: bool) -> Any:
    """Recursively convert one JSON Schema node into a structural OpenAPI v3 node."""
    if isinstance(node, list):
        return [_structural(n, defs, status=status) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        ref = node.pop("$ref").rsplit("/", 1)[-1]
        target = copy.deepcopy(defs[ref])
        rules = target.get("x-kubernetes-validations", []) + node.pop("x-kubernetes-validations", [])
        merged = {**target, **node}
        if rules:
            merged["x-kubernetes-validations"] = rules
        return _structural(merged, defs, status=status)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if not (k == "default" and v is None)}
            merged = {**_structural(options[0], defs, status=status), **rest}
            return _structural(merged, defs, status=status)
        node["anyOf"] = options
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or (key == "default" and (value is None or status)):
            continue
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            required = set(node.get("required", []))
            out[key] = {}
            for name, prop in value.items():
                converted = _structural(prop, defs, status=status)
                # A sub-object with a default_factory (a plain $ref, not Optional) defaults to {}
                # so that the API server fills its own defaults in too.
                if "$ref" in prop and name not in required and not status:
                    converted.setdefault("default", {})
                out[key][name] = converted
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs, status=status)
        else:
            out[key] = value
    if out.get("additionalProperties") is False:
        out.pop("additionalProperties")  # structural schemas prune unknown fields; strict validation rejects them
    if out.get("additionalProperties") is True or (out.get("type") == "object" and "additionalProperties" in out
                                                   and out["additionalProperties"] == {}):
        out.pop("additionalProperties")
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
        out.pop("default", None)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "array":
        out.setdefault("maxItems", _MAX_ITEMS)
    if out.get("type") == "string" and "enum" not in out and "format" not in out:
        out.setdefault("maxLength", _MAX_STRING)
    return out


def openapi_schema(model: type[Any], *, status: bool = False) -> dict[str, Any]:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs, status=status)
    schema.pop("description", None)
    return schema


def presence_rules(spec_schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Transition rules that keep optional immutable fields from being added or removed later.

    A field's own ``self == oldSelf`` rule runs only when the field exists in both the old and
    the new object, so an optional field without a default (``spec.image``, ``spec.queueName``)
    could be added or removed after creation unnoticed, and the next gang restart would run
    with it. The API server evaluates these rules on the parent (``spec``), where presence is
    visible: ``has(self.image) == has(oldSelf.image)``.
    """
    required = set(spec_schema.get("required", []))
    rules: list[dict[str, Any]] = []
    for name, prop in spec_schema.get("properties", {}).items():
        immutable = IMMUTABLE in prop.get("x-kubernetes-validations", [])
        if not immutable or name in required or "default" in prop:
            continue
        rules.append(
            cel(
                f"has(self.{name}) == has(oldSelf.{name})",
                f"spec.{name} is immutable once the job exists: it cannot be added or removed later; "
                "create a new AdaptationJob (or use a new name) instead",
                f".{name}",
            )
        )
    return rules


def build_crd() -> dict[str, Any]:
    """The full CustomResourceDefinition object."""
    spec_schema = openapi_schema(AdaptationJobSpec)
    spec_schema.setdefault("x-kubernetes-validations", []).extend(presence_rules(spec_schema))
    status_schema = openapi_schema(AdaptationJobStatus, status=True)
    spec_schema["description"] = "What to adapt, how, with what, and within which limits."
    status_schema["description"] = "Observed state, written by the kadapt operator."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "kadapt", "app.kubernetes.io/part-of": "kadapt"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "AdaptationJob adapts a pretrained model to a team's own task.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as the YAML committed under ``crds/``."""
    header = "# Generated by `kadapt crd` from kadapt_operator/api.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def _type_of(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(str(v) for v in prop["enum"])
    kind = str(prop.get("type", ""))
    if kind == "array":
        kind = "[]" + str(prop.get("items", {}).get("type", ""))
    bounds = []
    if "minimum" in prop:
        bounds.append((">" if prop.get("exclusiveMinimum") else "≥") + str(prop["minimum"]))
    if "maximum" in prop:
        bounds.append(("<" if prop.get("exclusiveMaximum") else "≤") + str(prop["maximum"]))
    return " ".join([kind, *bounds])


def reference_table() -> str:
    """The README's spec field reference (Markdown), generated so it cannot drift."""
    import json

    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]

    def walk(node: dict[str, Any], path: str) -> None:
        for name, prop in node.get("properties", {}).items():
            field = f"{path}.{name}"
            desc = str(prop.get("description", "")).replace("|", "\\|")
            if prop.get("type") == "object" and "properties" in prop:
                rows.append(f"| `{field}` | object | | {desc} |")
                walk(prop, field)
                continue
            required = " (required)" if name in node.get("required", []) else ""
            default = prop.get("default")
            shown = "" if default in (None, {}) else f"`{json.dumps(default)}`"
            rows.append(f"| `{field}` | {_type_of(prop)}{required} | {shown} | {desc} |")

    walk(spec, "spec")
    return "\n".join(rows) + "\n"
