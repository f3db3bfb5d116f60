"""``kadapt plan FILE``: steps, time and cost per strategy before any GPU is used.

It reads the manifest exactly as ``kadapt run`` does (relative paths from the manifest's
folder, the same overrides and operator settings for the price), counts the data and the
model's parameters from their files, and asks the trainer's pure estimator
(``kadapt_trainer.planning``, the same one ``auto`` uses inside the trainer) for each strategy.

With ``--local`` it plans a run on this machine, and measures rather than models it: a fresh
trainer process (``python -m kadapt_trainer.calibrate``) loads the job's model and data as the
trainer would and times its start-up and a few micro-batches per strategy; the estimate then
counts every micro-batch, evaluation and checkpoint of the run at those times. Where that
process cannot run (no torch here, ``--no-calibrate``), the FLOP model at a measured matrix
product rate is used instead, and the plan's ``hardware.source`` says which.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from kadapt_operator.local.runner import RunInvalid, RunOptions, load_one_job, localise
from kadapt_operator.output import OutputFormat, echo_json, print_invalid
from kadapt_operator.render import processes_per_worker, trainer_config
from kadapt_operator.settings import SettingsError, load_settings
from kadapt_operator.validation import SpecError
from kadapt_trainer.config import PVC_ROOT_ENV

#: Longest a calibration process may take before the plan falls back to the FLOP model.
CALIBRATION_TIMEOUT_SECONDS = 600


def calibrate(cfg: Any) -> tuple[Any, str | None]:
    """Step times of this job measured by a trainer process (``planning.StepTimes``), or why not.

    Runs in a subprocess: the operator side imports no torch, and a fresh process times the
    start-up a trainer process pays.
    """
    from kadapt_trainer.planning import StepTimes

    with tempfile.TemporaryDirectory(prefix="kadapt-plan-") as tmp:
        config, out = Path(tmp) / "trainer.json", Path(tmp) / "steps.json"
        config.write_text(cfg.model_dump_json(by_alias=True))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "kadapt_trainer.calibrate", str(config), str(out)],
                env=env,
                capture_output=True,
                text=True,
                timeout=CALIBRATION_TIMEOUT_SECONDS,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"calibration did not finish ({exc})"
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"calibration failed ({last})"
        return StepTimes.from_dict(json.loads(out.read_text())), None


def plan_document(options: RunOptions, local: bool = False, measure: bool = True) -> dict[str, Any]:
    """The plan of one manifest as a JSON-ready dict (``local``: on this machine's CPU, as ``kadapt run``).

    ``measure`` (with ``local``): time the job's own steps in a trainer process (see the module
    docstring) instead of the FLOP model.

    Raises:
        RunInvalid: the manifest, the overrides or the settings are invalid.
    """
    from kadapt_trainer import planning

    job = localise(load_one_job(options.manifest), options.manifest, options)
    try:
        settings = load_settings(options.settings_file)
    except SettingsError as exc:
        raise RunInvalid(
            str(options.settings_file or "operator settings"), [SpecError("(settings)", str(exc))]
        ) from None
    run_dir = options.run_dir or Path("kadapt-runs") / job.metadata.name
    os.environ.setdefault(PVC_ROOT_ENV, str((run_dir / "pvc").resolve()))
    cfg = trainer_config(job, settings)
    res = job.spec.resources
    processes = res.workers * processes_per_worker(job)
    gpus = 1 if res.gpus_per_worker > 0 else 0
    try:
        workload, shape, classes = planning.workload_for(cfg)
    except (OSError, ValueError, KeyError) as exc:
        raise RunInvalid(str(options.manifest), [SpecError("spec.dataset/spec.model", str(exc))]) from None
    hw = planning.hardware_for(cfg, processes, gpus, res.gpu_type, local=local)
    if local and measure:
        steps, why_not = calibrate(cfg)
        if steps is not None:
            hw = planning.with_step_times(hw, steps)
        else:
            hw = planning.with_source(hw, f"{hw.source}; {why_not}")
    estimates = planning.plan_strategies(cfg, workload, hw, hidden=shape["hidden"], num_labels=classes)
    configured = str(cfg.strategy.type)
    return {
        "job": job.metadata.name,
        "configured": configured,
        "workload": {
            "parameters": workload.total_params,
            "layers": workload.layers,
            "trainExamples": workload.train_examples,
            "validationExamples": workload.validation_examples,
            "tokensPerExample": round(workload.tokens_per_example, 1),
            "classes": classes,
        },
        "hardware": {
            "processes": processes,
            "gpuEquivalents": hw.gpu_equivalents,
            "flopsPerSecond": hw.flops_per_second,
            "source": hw.source,
            "stepTimes": hw.step_times.as_dict() if hw.step_times else None,
            "pricePerGPUHour": hw.price_per_gpu_hour,
            "currency": hw.currency,
        },
        "budget": {"maxCost": cfg.budget.max_cost, "maxGPUHours": cfg.budget.max_gpu_hours},
        "strategies": [e.as_dict() for e in estimates],
        # auto fits when one of its candidates does (it escalates only within the budget)
        "fits": any(e.fits_budget for e in estimates if configured in ("auto", e.strategy)),
    }


def plan_table(doc: dict[str, Any]) -> Table:
    """The human-readable plan."""
    w, hw = doc["workload"], doc["hardware"]
    table = Table(
        title=f"kadapt plan {doc['job']}: {w['trainExamples']} train / {w['validationExamples']} validation examples, "
        f"~{w['tokensPerExample']} tokens each, {w['parameters']:,} parameters",
        caption=f"{hw['source']}; upper bounds (early stopping can end sooner); configured: {doc['configured']}",
    )
    for col in ("strategy", "trainable", "epochs", "steps", "time", "GPU-s", "cost", "fits budget"):
        table.add_column(col, justify="left" if col in ("strategy", "fits budget") else "right")
    for e in doc["strategies"]:
        mark = " *" if e["strategy"] == doc["configured"] else ""
        table.add_row(
            e["strategy"] + mark,
            f"{e['trainable_params']:,}",
            str(e["epochs"]),
            str(e["steps"]),
            f"{e['seconds']:.0f}s",
            f"{e['gpu_seconds']:.0f}",
            f"{e['cost']:.4f} {hw['currency']}",
            "yes" if e["fits_budget"] else f"no: {e['budget_reason']}",
        )
    return table


def plan_command(
    file: Path = typer.Argument(..., help="An AdaptationJob manifest (one job)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Override spec.resources.workers."),
    procs_per_worker: int | None = typer.Option(
        None, "--procs-per-worker", min=1, help="Processes per worker (overrides spec.resources.gpusPerWorker)."
    ),
    settings: Path | None = typer.Option(None, "--settings", help="Operator settings YAML (GPU prices, currency)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Where pvc:// paths live locally (as kadapt run)."),
    local: bool = typer.Option(False, "--local", help="Plan a `kadapt run` on this machine (CPU measured here)."),
    measure: bool = typer.Option(
        True, "--calibrate/--no-calibrate", help="With --local: time the job's own steps here (a few seconds)."
    ),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json."),
) -> None:
    """Predict steps, time and cost per strategy, and whether the job fits spec.budget.

    Exit 0 when the configured strategy (for auto: every strategy auto may pick) fits, 1 when
    it does not, 2 when the manifest is invalid.
    """
    options = RunOptions(
        manifest=file, run_dir=run_dir, workers=workers, procs_per_worker=procs_per_worker, settings_file=settings
    )
    try:
        doc = plan_document(options, local=local, measure=measure)
    except RunInvalid as exc:
        print_invalid(exc.source, exc.errors)
        raise typer.Exit(2) from None
    if output == OutputFormat.JSON:
        echo_json(doc)
    else:
        Console(width=max(Console().width, 130)).print(plan_table(doc))
    raise typer.Exit(0 if doc["fits"] else 1)


def register(app: typer.Typer) -> None:
    """Add ``kadapt plan`` to the CLI."""
    app.command("plan")(plan_command)
