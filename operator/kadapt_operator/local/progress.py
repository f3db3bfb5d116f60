"""Reading rank 0's ``/progress`` and showing it as a live progress bar.

The local runner reads the same endpoint the operator polls, parsed with the same model
(``ProgressReport``), so what the bar shows is what a cluster's status would show.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from kadapt_operator.local.executor import LOCALHOST
from kadapt_trainer.config import ProgressReport

#: Seconds one /progress request may take before the bar keeps its last figures.
FETCH_TIMEOUT_SECONDS = 1.0
PROGRESS_PATH = "/progress"


def fetch_progress(port: int, host: str = LOCALHOST, timeout: float = FETCH_TIMEOUT_SECONDS) -> ProgressReport | None:
    """Rank 0's current report, or None while it is not serving yet (or no longer)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{PROGRESS_PATH}", timeout=timeout) as resp:
            return ProgressReport.model_validate(json.loads(resp.read()))
    except (OSError, urllib.error.URLError, ValueError, ValidationError):
        return None


def headline_metric(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The eval metric worth a column: accuracy when there is one, else eval loss, else the first."""
    for key in ("accuracy", "eval_accuracy", "f1", "eval_loss", "loss"):
        if key in metrics:
            return key, metrics[key]
    if metrics:
        key = sorted(metrics)[0]
        return key, metrics[key]
    return None


def format_seconds(seconds: float | None) -> str:
    """``1h02m03s`` / ``2m05s`` / ``7s``; ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def describe(report: ProgressReport) -> dict[str, Any]:
    """The bar's text fields for one report."""
    metric = headline_metric(report.eval_metrics)
    return {
        "state": report.state,
        "steps": f"{report.step}/{report.total_steps or '?'}",
        "epoch": f"{report.epoch:.2f}",
        "loss": "-" if report.loss is None else f"{report.loss:.4f}",
        "metric": "-" if metric is None else f"{metric[0]} {metric[1]:.4f}",
        "speed": "-" if report.samples_per_second is None else f"{report.samples_per_second:.1f}",
        "eta": format_seconds(report.eta_seconds),
    }


class ProgressView:
    """A rich progress bar fed with ``ProgressReport`` objects (a context manager)."""

    def __init__(self, job_name: str, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}[/] {task.fields[state]:<10}"),
            BarColumn(),
            TextColumn("step {task.fields[steps]}"),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[metric]}"),
            TextColumn("{task.fields[speed]} samples/s"),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(job_name, total=None, start=True, **describe(ProgressReport()))
        self.last: ProgressReport | None = None

    def __enter__(self) -> ProgressView:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, report: ProgressReport | None, *, state: str | None = None) -> None:
        """Show ``report`` (keep the last figures when None); ``state`` overrides the shown state."""
        if report is not None:
            self.last = report
        shown = self.last or ProgressReport()
        fields = describe(shown)
        if state is not None:
            fields["state"] = state
        # Early stopping ends before total_steps: a finished run shows a full bar.
        total = shown.step if shown.state == "succeeded" and shown.step else (shown.total_steps or None)
        self._progress.update(self._task, completed=shown.step, total=total, **fields)
