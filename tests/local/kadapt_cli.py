"""``python -m tests.local.kadapt_cli ...``: the real ``kadapt`` CLI app, with ``kadapt run`` registered.

Tests start ``kadapt run`` as a separate process (Ctrl-C needs one) through this module, so
that they work whether or not the CLI module already wires ``local.cli.register``.
"""

from __future__ import annotations

import typer

from kadapt_operator.cli import app
from kadapt_operator.local.cli import register


def build_app() -> typer.Typer:
    """The kadapt app with ``run`` registered exactly once."""
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    if "run" not in names and "run_command" not in names:
        register(app)
    return app


if __name__ == "__main__":
    build_app()()
