"""``kadapt compare FILE --strategies head-only,lora,partial,full``: one job, several strategies, one table.

The question kadapt exists to answer is which adaptation gives the best model for the money.
``compare`` runs the same manifest once per strategy through ``kadapt run`` (same data, same
split, same settings; only ``spec.strategy.type`` changes), then prints one table: strategy,
trainable parameters, accuracy and macro-F1, wall time, GPU-seconds and cost. It marks the
best accuracy per unit of cost and recommends the cheapest strategy within one accuracy point
of the best. The same figures go to ``compare.json`` and ``compare.png`` (accuracy vs cost).

Only the local mode exists so far; ``--cluster`` (one AdaptationJob per strategy, watched
through the Kubernetes API) is not implemented yet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from kadapt_operator.local.plots import INSTALL_HINT, accuracy_vs_cost, plotting_available
from kadapt_operator.local.runner import (
    DEFAULT_RUNS_DIR,
    LocalRun,
    OutputFormat,
    RunInvalid,
    RunOptions,
    RunStatus,
    RunSummary,
    localise,
)
from kadapt_operator.validation import load_jobs

STRATEGIES = ("head-only", "partial", "full", "lora", "auto")
JSON_FILE = "compare.json"
PNG_FILE = "compare.png"
#: A strategy within this much accuracy of the best counts as "as good" for the recommendation.
AS_GOOD = 0.01


@dataclass
class CompareRow:
    """One strategy's run, as the table, the JSON and the chart show it."""

    strategy: str
    status: str
    trainable_params: int
    total_params: int
    accuracy: float | None
    macro_f1: float | None
    wall_seconds: float
    gpu_seconds: float
    cost: float
    run_dir: str
    #: Highest accuracy per unit of cost among the finished strategies.
    best_value: bool = False
    #: The cheapest strategy within one accuracy point of the best.
    recommended: bool = False

    @classmethod
    def of(cls, strategy: str, summary: RunSummary) -> CompareRow:
        """The row of one ``kadapt run`` summary."""
        return cls(
            strategy=summary.strategy or strategy,
            status=summary.status.value,
            trainable_params=summary.trainable_params,
            total_params=summary.total_params,
            accuracy=summary.metrics.get("accuracy"),
            macro_f1=summary.metrics.get("macro_f1"),
            wall_seconds=summary.wall_seconds,
            gpu_seconds=summary.gpu_seconds,
            cost=summary.cost,
            run_dir=summary.run_dir,
        )


@dataclass
class Comparison:
    """All rows, the currency, and where the JSON and the chart went."""

    job: str
    currency: str
    rows: list[CompareRow]
    json_path: str
    png_path: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``compare.json`` document (also ``-o json``)."""
        return {
            "job": self.job,
            "currency": self.currency,
            "strategies": [asdict(r) for r in self.rows],
            "recommended": next((r.strategy for r in self.rows if r.recommended), None),
            "bestValue": next((r.strategy for r in self.rows if r.best_value), None),
            "json": self.json_path,
            "chart": self.png_path,
            "notes": self.notes,
        }


def parse_strategies(value: str) -> list[str]:
    """``head-only,lora`` -> the list, each one checked.

    Raises:
        typer.BadParameter: naming the unknown strategy and the known ones.
    """
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown strategy {', '.join(unknown) or '(none)'}; use some of {', '.join(STRATEGIES)}"
        )
    return list(dict.fromkeys(names))


def mark(rows: list[CompareRow]) -> None:
    """Mark the best accuracy per unit of cost and the recommendation (finished rows only)."""
    scored = [(r, r.accuracy) for r in rows if r.status == RunStatus.SUCCEEDED.value and r.accuracy is not None]
    if not scored:
        return
    max(scored, key=lambda ra: ra[1] / ra[0].cost if ra[0].cost > 0 else float("inf"))[0].best_value = True
    best = max(accuracy for _, accuracy in scored)
    min((r for r, accuracy in scored if accuracy >= best - AS_GOOD), key=lambda r: r.cost).recommended = True


def strategy_manifest(manifest: Path, strategy: str, folder: Path) -> Path:
    """The job with only its strategy changed, paths made absolute, its own name and output."""
    jobs = load_jobs(manifest)
    if len(jobs) != 1:
        raise RunInvalid(str(manifest), [])
    job = localise(jobs[0], manifest, RunOptions(manifest=manifest))
    doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["metadata"] = {"name": f"{job.metadata.name}-{strategy}"}
    doc["spec"].setdefault("strategy", {})["type"] = strategy
    doc["spec"]["output"]["uri"] = f"{doc['spec']['output']['uri'].rstrip('/')}-{strategy}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def compare(manifest: Path, strategies: list[str], base: RunOptions, console: Console) -> Comparison:
    """Run the job once per strategy (one after the other: they share this machine) and compare."""
    name = load_jobs(manifest)[0].metadata.name
    folder = (base.run_dir or DEFAULT_RUNS_DIR / f"{name}-compare").resolve()
    rows: list[CompareRow] = []
    currency = "USD"
    for strategy in strategies:
        console.print(f"kadapt compare {name}: {strategy} ({len(rows) + 1}/{len(strategies)})")
        run_dir = folder / strategy
        options = RunOptions(
            manifest=strategy_manifest(manifest, strategy, run_dir),
            run_dir=run_dir,
            workers=base.workers,
            procs_per_worker=base.procs_per_worker,
            settings_file=base.settings_file,
            extra_env=base.extra_env,
        )
        summary = LocalRun(options, console=console).execute(show_progress=False)
        currency = summary.currency
        rows.append(CompareRow.of(strategy, summary))
    mark(rows)
    result = Comparison(job=name, currency=currency, rows=rows, json_path=str(folder / JSON_FILE))
    if plotting_available():
        try:
            result.png_path = str(accuracy_vs_cost([asdict(r) for r in rows], folder / PNG_FILE, name, currency))
        except (OSError, ValueError) as exc:
            result.notes.append(f"chart not drawn: {exc}")
    else:
        result.notes.append(f"chart not drawn: {INSTALL_HINT}")
    (folder / JSON_FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def compare_table(result: Comparison) -> Table:
    """The one table of ``kadapt compare``."""
    table = Table(title=f"kadapt compare {result.job}")
    for column in ("strategy", "trainable", "accuracy", "macro-F1", "wall", "GPU-s", f"cost ({result.currency})", ""):
        table.add_column(column, justify="left" if column in ("strategy", "") else "right")
    for r in result.rows:
        marks = [m for m, on in (("best per cost", r.best_value), ("recommended", r.recommended)) if on]
        table.add_row(
            r.strategy if r.status == RunStatus.SUCCEEDED.value else f"{r.strategy} ({r.status})",
            f"{r.trainable_params:,}",
            "-" if r.accuracy is None else f"{r.accuracy:.4f}",
            "-" if r.macro_f1 is None else f"{r.macro_f1:.4f}",
            f"{r.wall_seconds:.0f}s",
            f"{r.gpu_seconds:.0f}",
            f"{r.cost:.4f}",
            ", ".join(marks),
        )
    return table


def compare_command(
    file: Path = typer.Argument(..., help="An AdaptationJob manifest (one job)."),
    strategies: str = typer.Option(
        "head-only,lora,partial,full", "--strategies", help="Comma-separated strategies to run and compare."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Where each strategy's run and the comparison go. Default: ./kadapt-runs/<job>-compare."
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Override spec.resources.workers."),
    procs_per_worker: int | None = typer.Option(
        None, "--procs-per-worker", min=1, help="Processes per worker on the CPU (overrides gpusPerWorker)."
    ),
    settings: Path | None = typer.Option(None, "--settings", help="Operator settings YAML (GPU prices, currency)."),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json."),
) -> None:
    """Run the same job under several strategies on this machine; one table, JSON and a chart."""
    names = parse_strategies(strategies)
    err = Console(stderr=True)
    base = RunOptions(
        manifest=file, run_dir=run_dir, workers=workers, procs_per_worker=procs_per_worker, settings_file=settings
    )
    try:
        result = compare(file, names, base, err)
    except RunInvalid as exc:  # kadapt validate FILE lists every error; one line here
        err.print(f"{exc.source}: invalid: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if output == OutputFormat.JSON:
        Console(soft_wrap=True).print_json(json.dumps(result.to_json()))
    else:
        out = Console()
        out.print(compare_table(result))
        for line in [f"JSON: {result.json_path}", *([f"chart: {result.png_path}"] if result.png_path else [])]:
            out.print(line, highlight=False, soft_wrap=True)
        for note in result.notes:
            err.print(note)
    failed = any(r.status != RunStatus.SUCCEEDED.value for r in result.rows)
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    """Add ``kadapt compare`` to the CLI."""
    app.command("compare")(compare_command)
