"""``kadapt run``: the command-line face of the local runner."""

from __future__ import annotations

from pathlib import Path

import typer

from kadapt_operator.local.runner import RunOptions, run
from kadapt_operator.output import OutputFormat


def run_command(
    file: Path = typer.Argument(..., help="An AdaptationJob manifest (one job)."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Where logs, claims and the output go. Default: ./kadapt-runs/<job name>."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Override spec.resources.workers (local processes standing for pods)."
    ),
    procs_per_worker: int | None = typer.Option(
        None,
        "--procs-per-worker",
        min=1,
        help="Processes per worker on the CPU instead of one per GPU (overrides spec.resources.gpusPerWorker).",
    ),
    settings: Path | None = typer.Option(
        None, "--settings", help="Operator settings YAML (GPU prices, currency) for the cost figure."
    ),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json (the summary)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bar."),
) -> None:
    """Train one AdaptationJob on this machine: validate, render, run its pods as local processes.

    Ctrl-C stops with a checkpoint; the same command again resumes from it.
    """
    # What to run, built as ``kadapt compare`` and ``kadapt plan`` build it; how to print it is apart.
    options = RunOptions(
        manifest=file, run_dir=run_dir, workers=workers, procs_per_worker=procs_per_worker, settings_file=settings
    )
    raise typer.Exit(run(options, output, show_progress=not no_progress))


def register(app: typer.Typer) -> None:
    """Add ``kadapt run`` to the CLI."""
    app.command("run")(run_command)
