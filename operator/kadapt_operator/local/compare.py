"""``kadapt compare FILE --strategies head-only,lora,partial,full``: one job, several strategies, one table.

The question kadapt exists to answer is which adaptation gives the best model for the money.
``compare`` runs the same manifest once per strategy through ``kadapt run`` (same data, same
split, same settings; only ``spec.strategy.type`` changes), then prints one table: strategy,
trainable parameters, accuracy and macro-F1, wall time, GPU-seconds and cost. It marks the
best accuracy per unit of cost and recommends the cheapest strategy within one accuracy point
of the best. The same figures go to ``compare.json`` and ``compare.png`` (accuracy vs cost).

This module is the one home of what both modes share: the job of each strategy
(:func:`strategy_document`), the rows, the marks, the table, the JSON and the chart. The
command itself, and its ``--cluster`` mode (one AdaptationJob per strategy, waited for through
the Kubernetes API), live in :mod:`kadapt_operator.compare_cli`, above both this local layer
and the runtime's API client.
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

from kadapt_operator.labels import DNS_LABEL_MAX
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
from kadapt_operator.validation import SpecError, load_jobs

STRATEGIES = ("head-only", "partial", "full", "lora", "auto")
JSON_FILE = "compare.json"
PNG_FILE = "compare.png"
#: A strategy within this much accuracy of the best counts as "as good" for the recommendation.
AS_GOOD = 0.01
#: Blocks that ``partial`` trains when the manifest names none (the API needs a number; the
#: trainer's own ``auto`` picks a third of the blocks, which only the model can tell).
DEFAULT_PARTIAL_LAYERS = 2
#: Strategy settings sections, and the strategies that accept each (the API's rule).
_SETTINGS_OF = {"lora": ("lora", "auto"), "partial": ("partial", "auto")}


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
    #: The local run's folder (None for a job on a cluster).
    run_dir: str | None
    #: Highest accuracy per unit of cost among the finished strategies.
    best_value: bool = False
    #: The cheapest strategy within one accuracy point of the best.
    recommended: bool = False
    #: Why it did not succeed (the failure's cause, or what it still waits for).
    reason: str | None = None
    #: The AdaptationJob's name on the cluster (``--cluster``; None for a local run).
    job: str | None = None

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
            reason=None if summary.status == RunStatus.SUCCEEDED else summary.cause,
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
    #: Where the jobs ran with ``--cluster`` (None on this machine).
    namespace: str | None = None

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
            "namespace": self.namespace,
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


def strategy_job_name(name: str, strategy: str, source: str) -> str:
    """``<name>-<strategy>``: each strategy's job, recognisable and the same on every run.

    Raises:
        RunInvalid: naming ``metadata.name`` when the result exceeds Kubernetes' 63 characters.
    """
    full = f"{name}-{strategy}"
    if len(full) > DNS_LABEL_MAX:
        longest = max(len(s) for s in STRATEGIES) + 1
        raise RunInvalid(
            source,
            [
                SpecError(
                    "metadata.name",
                    f"{name!r} plus the strategy suffix {f'-{strategy}'!r} is {len(full)} characters, over "
                    f"Kubernetes' {DNS_LABEL_MAX}; shorten metadata.name to at most {DNS_LABEL_MAX - longest}",
                )
            ],
        )
    return full


def strategy_document(doc: dict[str, Any], strategy: str, source: str) -> tuple[dict[str, Any], list[str]]:
    """The job (a manifest dict) under one strategy, and notes on what had to be filled in.

    Everything that decides the data and its split stays as it is (dataset, ``validationSplit``,
    ``training.seed``), so the strategies are compared on the same examples. Only these change:
    ``spec.strategy.type``; the settings of other strategies, which the API refuses beside it;
    ``partial`` without settings gets the top ``DEFAULT_PARTIAL_LAYERS`` blocks; the name and the
    output get the ``-<strategy>`` suffix, so that no two jobs write the same model.
    """
    out = json.loads(json.dumps(doc))
    out["metadata"]["name"] = strategy_job_name(doc["metadata"]["name"], strategy, source)
    spec = out["spec"]
    section: dict[str, Any] = {"type": strategy}
    notes: list[str] = []
    for key, allowed in _SETTINGS_OF.items():
        if strategy in allowed and (spec.get("strategy") or {}).get(key) is not None:
            section[key] = spec["strategy"][key]
    partial = section.get("partial") or {}
    if strategy == "partial" and not (partial.get("trainableLayers") or partial.get("modules")):
        section["partial"] = {"trainableLayers": DEFAULT_PARTIAL_LAYERS}
        notes.append(
            f"partial: spec.strategy.partial is not set in {source}; it trains the top {DEFAULT_PARTIAL_LAYERS} "
            "blocks (set spec.strategy.partial.trainableLayers, with type auto, to choose)"
        )
    spec["strategy"] = section
    spec["output"]["uri"] = f"{spec['output']['uri'].rstrip('/')}-{strategy}"
    return out, notes


def strategy_manifest(manifest: Path, strategy: str, folder: Path) -> tuple[Path, list[str]]:
    """The job of one strategy, paths made absolute, written to ``folder/job.yaml``; and its notes."""
    jobs = load_jobs(manifest)
    if len(jobs) != 1:
        raise RunInvalid(str(manifest), [])
    job = localise(jobs[0], manifest, RunOptions(manifest=manifest))
    doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["metadata"] = {"name": job.metadata.name}
    doc, notes = strategy_document(doc, strategy, str(manifest))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, notes


def compare(manifest: Path, strategies: list[str], base: RunOptions, console: Console) -> Comparison:
    """Run the job once per strategy (one after the other: they share this machine) and compare."""
    name = load_jobs(manifest)[0].metadata.name
    folder = (base.run_dir or DEFAULT_RUNS_DIR / f"{name}-compare").resolve()
    rows: list[CompareRow] = []
    notes: list[str] = []
    currency = "USD"
    for strategy in strategies:
        console.print(f"kadapt compare {name}: {strategy} ({len(rows) + 1}/{len(strategies)})")
        run_dir = folder / strategy
        job_file, job_notes = strategy_manifest(manifest, strategy, run_dir)
        notes.extend(job_notes)
        options = RunOptions(
            manifest=job_file,
            run_dir=run_dir,
            workers=base.workers,
            procs_per_worker=base.procs_per_worker,
            settings_file=base.settings_file,
            extra_env=base.extra_env,
        )
        summary = LocalRun(options, console=console).execute(show_progress=False)
        currency = summary.currency
        rows.append(CompareRow.of(strategy, summary))
    return finish(Comparison(job=name, currency=currency, rows=rows, json_path=str(folder / JSON_FILE), notes=notes))


def finish(result: Comparison) -> Comparison:
    """Mark the rows, draw the chart next to the JSON and write the JSON (both modes)."""
    mark(result.rows)
    folder = Path(result.json_path).parent
    folder.mkdir(parents=True, exist_ok=True)
    if plotting_available():
        try:
            rows = [asdict(r) for r in result.rows]
            result.png_path = str(accuracy_vs_cost(rows, folder / PNG_FILE, result.job, result.currency))
        except (OSError, ValueError) as exc:
            result.notes.append(f"chart not drawn: {exc}")
    else:
        result.notes.append(f"chart not drawn: {INSTALL_HINT}")
    Path(result.json_path).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def compare_table(result: Comparison) -> Table:
    """The one table of ``kadapt compare`` (a failed strategy shows its reason in the last column)."""
    table = Table(title=f"kadapt compare {result.job}")
    for column in ("strategy", "trainable", "accuracy", "macro-F1", "wall", "GPU-s", f"cost ({result.currency})", ""):
        table.add_column(column, justify="left" if column in ("strategy", "") else "right")
    for r in result.rows:
        marks = [m for m, on in (("best per cost", r.best_value), ("recommended", r.recommended)) if on]
        if r.reason:
            marks.append(r.reason)
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


def show(result: Comparison, output: OutputFormat) -> int:
    """Print the comparison (table or JSON) and its notes; the exit code: 1 when a strategy did not succeed."""
    err = Console(stderr=True)
    if output == OutputFormat.JSON:
        Console(soft_wrap=True).print_json(json.dumps(result.to_json()))
    else:
        out = Console()
        out.print(compare_table(result))
        for line in [f"JSON: {result.json_path}", *([f"chart: {result.png_path}"] if result.png_path else [])]:
            out.print(line, highlight=False, soft_wrap=True)
    for note in result.notes:
        err.print(note, highlight=False, soft_wrap=True)
    return 1 if any(r.status != RunStatus.SUCCEEDED.value for r in result.rows) else 0
