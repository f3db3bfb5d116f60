"""Check objects against the CRD as an API server would: defaults, schema, strict fields, CEL.

The API server applies structural defaults, rejects unknown fields (kubectl's strict field
validation), checks the OpenAPI v3 schema and then evaluates every ``x-kubernetes-validations``
rule. Transition rules (those using ``oldSelf``) run only on an update (:func:`update_errors`),
and, as on the server, only where the node exists in both the old and the new object.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting: fill absent properties that have a default, recursively."""
    if isinstance(obj, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(sub, obj[name])
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


def unknown_fields(schema: dict[str, Any], obj: Any, path: str) -> list[str]:
    """Fields a strict API server rejects (what pruning would silently drop)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(schema["properties"][key], value, f"{path}.{key}")
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in obj.items():
            found += unknown_fields(schema["additionalProperties"], value, f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]")
    return found


_ABSENT = object()


def cel_failures(schema: dict[str, Any], obj: Any, path: str, old: Any = _ABSENT) -> list[str]:
    """Messages of the CEL rules that evaluate to false on ``obj`` (bottom-up like the server).

    With ``old`` (an update), transition rules run too, with ``oldSelf`` bound to it; they are
    skipped where the node is absent from the old object (list items are not correlated).
    """
    failures: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key in schema["properties"]:
                old_value = old.get(key, _ABSENT) if isinstance(old, dict) else _ABSENT
                failures += cel_failures(schema["properties"][key], value, f"{path}.{key}", old_value)
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            failures += cel_failures(schema["items"], item, f"{path}[{i}]")
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        activation = {"self": celpy.json_to_cel(obj)}
        if "oldSelf" in rule["rule"]:
            if old is _ABSENT:
                continue
            activation["oldSelf"] = celpy.json_to_cel(old)
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            failures.append(f"{path}: {rule['message']}")
    return failures


def crd_errors(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse ``obj`` on create; empty when it is accepted."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = apply_defaults(schema, copy.deepcopy(obj))
    errors = unknown_fields(schema, obj, "")
    validator = jsonschema.Draft4Validator(schema)
    errors += [
        "." + ".".join(str(p) for p in e.absolute_path) + ": " + e.message for e in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    return cel_failures(schema, obj, "")


def update_errors(crd: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse an update from ``old`` (as stored) to ``new``."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = crd_errors(crd, new)
    if errors:
        return errors
    stored = apply_defaults(schema, copy.deepcopy(old))
    return cel_failures(schema, apply_defaults(schema, copy.deepcopy(new)), "", stored)
