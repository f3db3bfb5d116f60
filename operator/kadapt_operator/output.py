"""How every ``kadapt`` command prints: the ``--output`` formats, JSON for scripts, invalid manifests.

One home, so that ``kadapt validate``, ``render``, ``run`` and ``plan`` cannot drift apart:
a script that parses one command's JSON, or greps one command's ``<file>: invalid`` lines,
reads every command's the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import typer

from kadapt_operator.validation import SpecError


class OutputFormat(StrEnum):
    """``--output``: ``text`` for people, ``json`` for scripts."""

    TEXT = "text"
    JSON = "json"


def echo_json(doc: Any) -> None:
    """One JSON document on stdout, indented by two spaces."""
    typer.echo(json.dumps(doc, indent=2))


def print_invalid(source: str, errors: Iterable[SpecError]) -> None:
    """Errors in the format of ``kadapt validate`` on stderr: ``<source>: invalid``, then a line per field."""
    typer.echo(f"{source}: invalid", err=True)
    for e in errors:
        typer.echo(f"  {e.path}: {e.message}", err=True)
