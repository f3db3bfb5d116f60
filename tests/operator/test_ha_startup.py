"""`kadapt operator` start-up: it says what it serves, and a taken metrics port is one clear line."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from typer.testing import CliRunner

from kadapt_operator.cli import app
from kadapt_operator.runtime import startup


def test_a_taken_metrics_port_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []

    async def never(*args: Any, **kwargs: Any) -> None:
        started.append(args)

    monkeypatch.setattr(startup, "run_operator", never)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["operator", "-n", "team-a"], env={"KADAPT_METRICS_PORT": str(port), "KADAPT_OPERATOR_CONFIG": ""}
        )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), "no traceback"
    lines = [line for line in result.output.splitlines() if line.startswith("kadapt operator:")]
    assert len(lines) == 1 and f"cannot serve metrics on port {port}" in lines[0]
    assert "KADAPT_METRICS_PORT" in lines[0] and "--no-metrics" in lines[0]
    assert "Traceback" not in result.output
    assert started == [], "the operator must not start without its metrics"


@pytest.mark.parametrize(
    ("args", "served"),
    [(["-n", "team-a", "-n", "team-b"], "serving namespaces team-a, team-b"), (["-A"], "serving all namespaces")],
)
def test_start_up_names_the_served_namespaces(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, args: list[str], served: str
) -> None:
    async def stop_at_once(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(startup, "run_operator", stop_at_once)
    with caplog.at_level(logging.INFO, logger="kadapt.operator"):
        result = CliRunner().invoke(app, ["operator", *args, "--no-metrics"], env={"KADAPT_OPERATOR_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert any(served in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(("verbose", "level"), [([], logging.WARNING), (["--verbose"], logging.NOTSET)])
def test_per_event_handler_lines_are_quiet_unless_verbose(
    monkeypatch: pytest.MonkeyPatch, verbose: list[str], level: int
) -> None:
    async def stop_at_once(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(startup, "run_operator", stop_at_once)
    objects = logging.getLogger("kopf.objects")
    monkeypatch.setattr(objects, "level", logging.NOTSET)
    result = CliRunner().invoke(app, ["operator", "-n", "team-a", "--no-metrics", *verbose],
                                env={"KADAPT_OPERATOR_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert objects.level == level
