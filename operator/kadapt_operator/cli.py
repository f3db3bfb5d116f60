"""The ``kadapt`` command line.

Heavy imports (kopf, torch) happen inside the commands that need them, so that
``kadapt validate`` and ``kadapt crd`` work with the base install alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypedDict

import typer

from kadapt_operator import __version__
from kadapt_operator.manifests import read_manifests, skipped_summary
from kadapt_operator.output import OutputFormat, echo_json, print_invalid

app = typer.Typer(
    name="kadapt",
    help="Adapt pretrained models to your task: on Kubernetes, or on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class FileResult(TypedDict):
    """One file's outcome in `kadapt validate --output json`."""

    file: str
    valid: bool
    jobs: list[str]
    errors: list[dict[str, str]]
    skipped: list[str]


@app.command()
def validate(
    files: list[Path] = typer.Argument(
        ..., help="AdaptationJob manifests or folders (YAML, several documents allowed; other kinds are skipped)."
    ),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json."),
) -> None:
    """Check manifests against the AdaptationJob API; exit 1 listing every error.

    Folders are searched for YAML files, and documents of other kinds (Secrets, claims,
    kustomization files) are skipped and counted, so this runs in CI over a GitOps repository.
    """
    manifests = read_manifests(files)
    results = [
        FileResult(
            file=str(m.path),
            valid=m.valid,
            jobs=[j.metadata.name for j in m.jobs],
            errors=[e.to_dict() for e in m.errors],
            skipped=[str(s) for s in m.skipped],
        )
        for m in manifests
    ]
    ok = all(r["valid"] for r in results)
    summary = skipped_summary(manifests)
    if output == OutputFormat.JSON:
        skipped = sum(len(r["skipped"]) for r in results)
        echo_json({"valid": ok, "skipped": skipped, "files": results})
    else:
        for m, r in zip(manifests, results, strict=True):
            if r["valid"]:
                names = ", ".join(r["jobs"]) or "no AdaptationJob"
                extra = f"; skipped {len(r['skipped'])}: {', '.join(r['skipped'])}" if r["skipped"] else ""
                typer.echo(f"{r['file']}: valid ({names}){extra}")
            else:
                print_invalid(r["file"], m.errors)
        jobs = sum(len(r["jobs"]) for r in results)
        if summary or len(results) > 1:
            typer.echo(f"{jobs} AdaptationJob(s) in {len(results)} file(s)" + (f"; {summary}" if summary else ""))
    raise typer.Exit(0 if ok else 1)


@app.command()
def crd() -> None:
    """Print the AdaptationJob CustomResourceDefinition (YAML)."""
    from kadapt_operator.crd import render_crd_yaml

    sys.stdout.write(render_crd_yaml())


@app.command()
def version() -> None:
    """Print kadapt's version."""
    typer.echo(f"kadapt {__version__}")


def _register_layers() -> None:
    """Commands from the other layers; each module exposes ``register(app)``."""
    from kadapt_operator import compare_cli, render_cli
    from kadapt_operator.local import cli as local_cli
    from kadapt_operator.local import plan as plan_cli
    from kadapt_operator.runtime import cli as runtime_cli

    render_cli.register(app)
    local_cli.register(app)
    compare_cli.register(app)
    plan_cli.register(app)
    runtime_cli.register(app)


_register_layers()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
