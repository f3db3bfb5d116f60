"""``kadapt render``: print exactly the objects the operator would create, like ``helm template``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from kadapt_operator.manifests import read_manifests, skipped_summary
from kadapt_operator.output import print_invalid
from kadapt_operator.render import cluster_warnings, render, to_yaml
from kadapt_operator.settings import SettingsError, load_settings
from kadapt_operator.validation import SpecError, SpecInvalid


def render_files(files: list[Path], settings_file: Path | None) -> None:
    """Validate and render every job of ``files``; print YAML only when all of them render.

    Raises:
        typer.Exit: code 1 on invalid manifests or settings (nothing printed on stdout then).
    """
    try:
        settings = load_settings(settings_file)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    objects: list[dict[str, Any]] = []
    ok = True
    manifests = read_manifests(files)
    for manifest in manifests:
        path = manifest.path
        if not manifest.valid:
            print_invalid(str(path), manifest.errors)
            ok = False
            continue
        jobs = manifest.jobs
        errors: list[SpecError] = []
        for i, job in enumerate(jobs):
            try:
                objects.extend(render(job, settings).objects())
                for w in cluster_warnings(job):
                    typer.echo(f"{path}: warning: {job.metadata.name}: {w}", err=True)
            except SpecInvalid as exc:
                prefix = f"[doc {i}] " if len(jobs) > 1 else ""
                errors.extend(SpecError(prefix + e.path, e.message) for e in exc.errors)
        if errors:
            print_invalid(str(path), errors)
            ok = False
    summary = skipped_summary(manifests)
    if summary:
        typer.echo(f"kadapt render: {summary}", err=True)
    if not ok:
        raise typer.Exit(1)
    sys.stdout.write(to_yaml(objects))


def register(app: typer.Typer) -> None:
    """Add ``kadapt render`` to the CLI."""

    @app.command("render")
    def render_command(
        files: list[Path] = typer.Argument(
            ..., help="AdaptationJob manifests or folders (YAML, several documents allowed; other kinds are skipped)."
        ),
        settings_file: Path | None = typer.Option(
            None,
            "--settings",
            "-s",
            help="Operator settings YAML (default: $KADAPT_OPERATOR_CONFIG or /etc/kadapt/operator.yaml if present).",
        ),
    ) -> None:
        """Print the ConfigMap, Service and Job the operator creates for each job (multi-document YAML)."""
        render_files(files, settings_file)
