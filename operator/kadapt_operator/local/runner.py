"""``kadapt run``: validate, render and execute one AdaptationJob on this machine.

The steps are the operator's (validate -> render -> run the Job's pods -> report), with the
local executor standing in for the cluster. What the user gets on top: a live progress bar
read from rank 0's ``/progress``, Ctrl-C that stops with a checkpoint (the same command
resumes from it), on failure the failing process's last log lines and a one-line cause, and a
summary of what was trained, how well, how long and at what GPU-equivalent price.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kadapt_operator.api import AdaptationJob
from kadapt_operator.cost import cost_of
from kadapt_operator.local.executor import (
    ExecOptions,
    Gang,
    GangPhase,
    GangResult,
    LocalPod,
    PodSpecUnsupported,
    plan_pods,
    split_objects,
)
from kadapt_operator.local.plots import CURVE_FILE, INSTALL_HINT, plotting_available, training_curve
from kadapt_operator.local.progress import ProgressView, fetch_progress, format_seconds
from kadapt_operator.output import OutputFormat, print_invalid
from kadapt_operator.render import render, to_yaml, trainer_config
from kadapt_operator.settings import OperatorSettings, SettingsError, load_settings
from kadapt_operator.validation import SpecError, SpecInvalid, load_jobs, validate_object
from kadapt_trainer.config import (
    EXIT_BAD_INPUT,
    PVC_ROOT_ENV,
    RESULT_FILE,
    ProgressReport,
    resolve_uri,
)

#: Where runs go when ``--run-dir`` is not given: ``./kadapt-runs/<job name>``.
DEFAULT_RUNS_DIR = Path("kadapt-runs")
#: Files the runner writes into the run directory.
RENDERED_FILE = "rendered.yaml"
SUMMARY_FILE = "summary.json"
#: Seconds between two looks at the pods and rank 0's /progress.
POLL_SECONDS = 0.5
#: Log lines shown when a process fails.
FAILURE_LOG_LINES = 20

#: Exit codes of ``kadapt run``: 0 only when the model was trained and written.

#: Spec fields holding a location; a plain relative path is relative to the manifest's folder.
PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("model", "uri"),
    ("dataset", "uri"),
    ("dataset", "validationUri"),
    ("output", "uri"),
    ("checkpoint", "uri"),
)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
#: A line that states why a process died: ``SomeError: message`` (not torchrun's wrapper).
_CAUSE_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
_WRAPPER_ERRORS = ("ChildFailedError", "SignalException", "DistNetworkError", "DistBackendError")
#: The trainer's one-line error (``kadapt-trainer: error: dataset.uri: ... does not exist``).
_TRAINER_ERROR = re.compile(r"^kadapt[\w-]*: error: (.+)$")
#: Where torchrun's own report on a failed worker begins, and the worker exit code it names.
_TORCHRUN_MARKERS = ("failed (exitcode:", "ChildFailedError", "torch/distributed/elastic/multiprocessing/api.py")
_WORKER_EXIT = re.compile(r"exitcode\s*:\s*(-?\d+)")


class RunStatus(StrEnum):
    """How a local run ended; each has its own exit code of ``kadapt run``."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    INVALID = "invalid"

    @property
    def exit_code(self) -> int:
        """0 only on success; 130 (128 + SIGINT, as shells expect) after Ctrl-C; else 1, as ``kadapt validate``."""
        return {RunStatus.SUCCEEDED: 0, RunStatus.STOPPED: 130}.get(self, 1)


class RunOptions(BaseModel):
    """What ``kadapt run`` (and ``kadapt compare``, ``kadapt plan``) was asked to do.

    The limits are the flags' own (``--workers`` and ``--procs-per-worker`` at least 1), so that
    a caller from Python gets the same error, naming the field, as one on the command line.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: Path
    run_dir: Path | None = None
    workers: int | None = Field(default=None, ge=1, description="--workers: overrides spec.resources.workers.")
    procs_per_worker: int | None = Field(
        default=None, ge=1, description="--procs-per-worker: overrides spec.resources.gpusPerWorker."
    )
    settings_file: Path | None = None
    #: Grace period for Ctrl-C; None: the pod's terminationGracePeriodSeconds.
    grace_seconds: float | None = Field(default=None, gt=0)
    #: Extra environment for the pods (tests point caches somewhere).
    extra_env: dict[str, str] = Field(default_factory=dict)


#: The summary's figures that are the trainer's own word, by the same name in its report (its
#: final result, else its last ``/progress``); ``metrics`` and ``steps`` are its eval_metrics and step.
REPORTED_FIELDS: set[str] = {
    "strategy", "strategy_reason", "trainable_params", "total_params", "loss", "total_steps", "epoch",
    "last_checkpoint", "better_than_baseline", "warnings",
}


@dataclass
class RunSummary:
    """What the end-of-run table and ``--output json`` report."""

    job: str
    status: RunStatus
    run_dir: str
    exit_code: int
    strategy: str | None = None
    strategy_reason: str | None = None
    trainable_params: int = 0
    total_params: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    loss: float | None = None
    steps: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    workers: int = 1
    processes_per_worker: int = 1
    wall_seconds: float = 0.0
    gpu_equivalents: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    currency: str = "USD"
    price_per_gpu_hour: float = 0.0
    gpu_type: str = "default"
    output_path: str | None = None
    last_checkpoint: str | None = None
    resumed: bool = False
    #: The training curve PNG in the run directory (loss and eval metric per evaluation).
    training_curve: str | None = None
    #: The same rendered job had already succeeded in this run folder: nothing was run again.
    already_finished: bool = False
    cause: str | None = None
    failed_pod: str | None = None
    log_tail: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    #: False when the model is no better than always predicting the majority class (issue 12.9).
    better_than_baseline: bool | None = None
    #: The trainer's warnings (e.g. that one), shown in the summary.
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``--output json`` document (camelCase keys, like the job's status)."""
        pct = 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0
        return {
            "job": self.job,
            "status": self.status.value,
            "exitCode": self.exit_code,
            "strategy": {"resolved": self.strategy, "reason": self.strategy_reason},
            "parameters": {"trainable": self.trainable_params, "total": self.total_params, "percent": round(pct, 4)},
            "metrics": self.metrics,
            "loss": self.loss,
            "progress": {"step": self.steps, "totalSteps": self.total_steps, "epoch": self.epoch},
            "resources": {"workers": self.workers, "processesPerWorker": self.processes_per_worker},
            "wallSeconds": round(self.wall_seconds, 3),
            "cost": {
                "gpuEquivalents": self.gpu_equivalents,
                "gpuSeconds": round(self.gpu_seconds, 3),
                "amount": round(self.cost, 6),
                "currency": self.currency,
                "pricePerGPUHour": self.price_per_gpu_hour,
                "gpuType": self.gpu_type,
            },
            "output": self.output_path,
            "lastCheckpoint": self.last_checkpoint,
            "resumed": self.resumed,
            "trainingCurve": self.training_curve,
            "alreadyFinished": self.already_finished,
            "runDir": self.run_dir,
            "cause": self.cause,
            "failedPod": self.failed_pod,
            "logTail": self.log_tail,
            "errors": self.errors,
            "betterThanBaseline": self.better_than_baseline,
            "warnings": self.warnings,
        }


class RunInvalid(Exception):
    """The manifest, the overrides or the settings cannot run; carries errors in validate's format."""

    def __init__(self, source: str, errors: list[SpecError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.source = source
        self.errors = errors


def _local_path(value: str, base: Path) -> str:
    """A plain relative path made absolute against ``base``; URIs and absolute paths unchanged."""
    if _SCHEME.match(value) or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def localise(job: AdaptationJob, manifest: Path, options: RunOptions) -> AdaptationJob:
    """The job as it runs here: relative paths resolved from the manifest's folder, overrides applied.

    Raises:
        RunInvalid: when the overrides make the job invalid (e.g. the batch no longer divides).
    """
    doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("status", None)
    spec = doc["spec"]
    base = manifest.resolve().parent
    for section, key in PATH_FIELDS:
        part = spec.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            part[key] = _local_path(part[key], base)
    resources = spec.setdefault("resources", {})
    if options.workers is not None:
        resources["workers"] = options.workers
    if options.procs_per_worker is not None:
        # torchrun starts one process per GPU; locally each stands in for one.
        resources["gpusPerWorker"] = options.procs_per_worker
    # A local run is never suspended: the user asked for it to run now.
    doc["spec"].setdefault("runPolicy", {})["suspend"] = False
    try:
        return validate_object(doc, str(manifest))
    except SpecInvalid as exc:
        hint = _override_hint(options)
        raise RunInvalid(str(manifest), [SpecError(e.path, e.message + hint) for e in exc.errors]) from None


def _override_hint(options: RunOptions) -> str:
    given = []
    if options.workers is not None:
        given.append(f"--workers {options.workers}")
    if options.procs_per_worker is not None:
        given.append(f"--procs-per-worker {options.procs_per_worker}")
    return f" (with {' '.join(given)})" if given else ""


def load_one_job(manifest: Path) -> AdaptationJob:
    """The single AdaptationJob of ``manifest``, validated exactly as ``kadapt validate`` does.

    Raises:
        RunInvalid: with the very errors ``kadapt validate`` prints, or when the file holds several jobs.
    """
    try:
        jobs = load_jobs(manifest)
    except SpecInvalid as exc:
        raise RunInvalid(str(manifest), exc.errors) from None
    if len(jobs) != 1:
        names = ", ".join(j.metadata.name for j in jobs)
        raise RunInvalid(
            str(manifest),
            [SpecError("(file)", f"holds {len(jobs)} AdaptationJobs ({names}); kadapt run takes one per file")],
        )
    return jobs[0]


def failure_cause(lines: list[str], exit_code: int | None) -> str:
    """One line saying why a process failed.

    In order: the trainer's own ``kadapt-trainer: error: ...`` line, the last ``...Error: message``
    line of a traceback (not torchrun's wrapper), else what the exit code says.
    """
    for line in reversed(lines):
        own = _TRAINER_ERROR.match(line)
        if own:
            return own.group(1).strip()
    for line in reversed(lines):
        match = _CAUSE_LINE.match(line)
        if match and match.group(1) not in _WRAPPER_ERRORS and match.group(2):
            return line.strip()
    if exit_code is None:
        return "the process did not report why it stopped"
    if exit_code > 128:
        try:
            name = signal.Signals(exit_code - 128).name
        except ValueError:
            name = f"signal {exit_code - 128}"
        return f"the process was killed by {name} (exit code {exit_code})"
    if exit_code == EXIT_BAD_INPUT:
        return f"bad input (exit code {exit_code}); see the log lines above"
    return f"the process exited with code {exit_code}"


def worker_lines(lines: list[str]) -> tuple[list[str], int | None]:
    """The log up to torchrun's own failure report, and the worker exit code that report names.

    torchrun exits 1 whatever its worker did and then prints its traceback and a banner; the
    worker's last lines and its real exit code (``exitcode  : 2``) are what explain the failure.
    """
    for i, line in enumerate(lines):
        if any(marker in line for marker in _TORCHRUN_MARKERS):
            codes = [int(m.group(1)) for m in map(_WORKER_EXIT.search, lines[i:]) if m]
            return lines[:i] or lines, (codes[0] if codes else None)
    return lines, None


class _Interrupts:
    """Ctrl-C (and SIGTERM) while a run is going: the first stops cleanly, the second kills."""

    def __init__(self) -> None:
        self.count = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Interrupts]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _read_result(output_dir: Path) -> ProgressReport | None:
    try:
        return ProgressReport.model_validate_json((output_dir / RESULT_FILE).read_text())
    except (OSError, ValidationError, ValueError):
        return None


#: A complete checkpoint is a ``step-N`` folder holding the trainer's manifest; the names are
#: ``kadapt_trainer.checkpoint``'s (CHECKPOINT_PREFIX, MANIFEST_FILE), which imports torch, so
#: they are not imported here.
_CHECKPOINT_FOLDER = re.compile(r"^step-\d+$")
_CHECKPOINT_MANIFEST = "kadapt-manifest.json"


def has_complete_checkpoint(folder: Path) -> bool:
    """Whether the trainers will resume: a complete ``step-N`` checkpoint exists in ``folder``.

    A half-written ``.tmp-step-N`` folder (a run killed while saving, or before its first
    checkpoint) is not one: the trainers skip it and start fresh, and the runner must not say
    that it resumed.
    """
    if not folder.is_dir():
        return False
    return any(
        p.is_dir() and _CHECKPOINT_FOLDER.match(p.name) and (p / _CHECKPOINT_MANIFEST).is_file()
        for p in folder.iterdir()
    )


class LocalRun:
    """One ``kadapt run``: prepared (validated and rendered) on construction, then executed."""

    def __init__(self, options: RunOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(stderr=True)
        job = load_one_job(options.manifest)
        self.job = localise(job, options.manifest, options)
        try:
            self.settings: OperatorSettings = load_settings(options.settings_file)
        except SettingsError as exc:
            source = str(options.settings_file or "operator settings")
            raise RunInvalid(source, [SpecError("(settings)", str(exc))]) from None
        try:
            self.rendered = render(self.job, self.settings, suspend=False)
        except SpecInvalid as exc:
            raise RunInvalid(str(options.manifest), exc.errors) from None
        name = self.job.metadata.name
        self.run_dir = (options.run_dir or DEFAULT_RUNS_DIR / name).resolve()
        self.config = trainer_config(self.job, self.settings)
        env = {PVC_ROOT_ENV: str(self.run_dir / "pvc")}
        self.output_dir = resolve_uri(self.config.output.uri, env)
        self.checkpoint_dir = resolve_uri(self.config.checkpoint_uri(), env)

    # -- figures -----------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return self.job.spec.resources.workers

    @property
    def processes_per_worker(self) -> int:
        return max(self.job.spec.resources.gpus_per_worker, 1)

    def gpu_equivalents(self) -> int:
        """GPUs the same run would hold on a cluster: one per process, none for a CPU-only job."""
        spec_gpus = self.job.spec.resources.gpus_per_worker
        return self.workers * self.processes_per_worker if spec_gpus > 0 else 0

    # -- running -----------------------------------------------------------------------------
    def _extra_env(self) -> dict[str, str]:
        env = dict(self.options.extra_env)
        if self.options.procs_per_worker is not None:
            # Processes instead of GPUs: keep them on the CPU even where a GPU is present.
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        return env

    def finished_result(self) -> ProgressReport | None:
        """The earlier result of this very job in this run folder, when it succeeded.

        "This very job" means the same rendered objects (spec, settings and overrides alike):
        a changed manifest trains again; an unchanged one does not pay for the same run twice.
        """
        try:
            previous = (self.run_dir / RENDERED_FILE).read_text()
        except OSError:
            return None
        final = _read_result(self.output_dir)
        if previous != to_yaml(self.rendered.objects()) or final is None or final.state != "succeeded":
            return None
        return final

    def execute(self, show_progress: bool = True) -> RunSummary:
        """Run the pods to the end, a failure, or Ctrl-C; return the summary (never raises for them)."""
        done = self.finished_result()
        if done is not None:
            self.console.print(
                f"{self.job.metadata.name}: already finished; output at {self.output_dir} "
                f"(delete {self.output_dir / RESULT_FILE} to train it again)",
                highlight=False,
                soft_wrap=True,
            )
            return self._summary(RunStatus.SUCCEEDED, done, done.wall_seconds, False, already_finished=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / RENDERED_FILE).write_text(to_yaml(self.rendered.objects()))
        resumed = has_complete_checkpoint(self.checkpoint_dir)
        # A result file from an earlier run must not pass for this run's.
        with contextlib.suppress(FileNotFoundError):
            (self.output_dir / RESULT_FILE).unlink()
        job, config_maps, service = split_objects(self.rendered.objects())
        opts = ExecOptions(run_dir=self.run_dir, extra_env=self._extra_env(), grace_seconds=self.options.grace_seconds)
        try:
            plans = plan_pods(job, config_maps, service, opts)
        except PodSpecUnsupported as exc:
            return self._summary(RunStatus.FAILED, None, 0.0, resumed, cause=str(exc))
        if resumed:
            self.console.print(
                f"Resuming from the checkpoint in {self.checkpoint_dir} if it loads (the summary says what resumed)"
            )
        self.console.print(
            f"Running {self.job.metadata.name}: {self.workers} worker(s) x {self.processes_per_worker} "
            f"process(es), logs in {opts.logs_dir}"
        )
        gang = Gang(plans)
        interrupts = _Interrupts()
        last: ProgressReport | None = None
        view_cm: contextlib.AbstractContextManager[ProgressView | None] = (
            ProgressView(self.job.metadata.name, self.console) if show_progress else contextlib.nullcontext()
        )
        started = time.monotonic()
        with interrupts.installed(), view_cm as view:
            try:
                gang.start()
            except OSError as exc:
                return self._summary(RunStatus.FAILED, None, 0.0, resumed, cause=str(exc))
            stop_deadline: float | None = None
            while True:
                phase = gang.poll()
                report = fetch_progress(gang.rank0.plan.progress_port) if phase == GangPhase.RUNNING else None
                if report is not None:
                    last = report
                if view is not None:
                    view.update(report, state="stopping" if stop_deadline is not None else None)
                if phase != GangPhase.RUNNING:
                    final = _read_result(self.output_dir) if phase == GangPhase.SUCCEEDED else None
                    if view is not None:
                        view.update(final, state=final.state if final else phase.value.lower())
                    break
                if interrupts.count and stop_deadline is None:
                    grace = max(p.plan.grace_seconds for p in gang.pods)
                    self.console.print(
                        "Stopping: the trainers are writing a checkpoint (Ctrl-C again to kill them now)"
                    )
                    gang.request_stop()
                    stop_deadline = time.monotonic() + grace
                if stop_deadline is not None and (interrupts.count > 1 or time.monotonic() > stop_deadline):
                    gang.stop(grace=0)
                time.sleep(POLL_SECONDS)
        wall = time.monotonic() - started
        result = gang.result()
        return self._finish(gang, result, last, wall, resumed, interrupted=bool(interrupts.count))

    def _finish(
        self,
        gang: Gang,
        result: GangResult,
        last: ProgressReport | None,
        wall: float,
        resumed: bool,
        *,
        interrupted: bool,
    ) -> RunSummary:
        final = _read_result(self.output_dir)
        if result.phase == GangPhase.SUCCEEDED and not interrupted and final is not None:
            return self._summary(RunStatus.SUCCEEDED, final, wall, resumed)
        if interrupted and result.phase != GangPhase.FAILED:
            return self._summary(
                RunStatus.STOPPED,
                last,
                wall,
                resumed,
                cause="stopped by Ctrl-C; run the same command again to resume from the checkpoint",
            )
        pod: LocalPod | None = gang.failing_pod()
        failed_pod: str | None = None
        log_tail: list[str] | None = None
        if pod is None and result.phase == GangPhase.SUCCEEDED:
            cause = f"the trainers exited 0 but wrote no {RESULT_FILE} in {self.output_dir}"
        else:
            cause, failed_pod, log_tail = _failure(gang, pod, last)
        return self._summary(
            RunStatus.FAILED, last, wall, resumed, cause=cause, failed_pod=failed_pod, log_tail=log_tail
        )

    def _summary(
        self,
        status: RunStatus,
        report: ProgressReport | None,
        wall: float,
        resumed: bool,
        *,
        cause: str | None = None,
        failed_pod: str | None = None,
        log_tail: list[str] | None = None,
        already_finished: bool = False,
    ) -> RunSummary:
        res = self.job.spec.resources
        price = self.settings.price_for(res.gpu_type)
        gpus = self.gpu_equivalents()
        report = report or ProgressReport()
        summary = RunSummary(
            job=self.job.metadata.name,
            status=status,
            run_dir=str(self.run_dir),
            exit_code=status.exit_code,
            **report.model_dump(include=REPORTED_FIELDS),  # copies: the curve step appends to warnings
            metrics=dict(report.eval_metrics),
            steps=report.step,
            workers=self.workers,
            processes_per_worker=self.processes_per_worker,
            wall_seconds=wall,
            gpu_equivalents=gpus,
            gpu_seconds=wall * gpus,
            cost=cost_of(wall * gpus, price),
            currency=self.settings.currency,
            price_per_gpu_hour=price,
            gpu_type=res.gpu_type,
            output_path=str(self.output_dir) if status == RunStatus.SUCCEEDED else None,
            resumed=resumed and report.resumed_from_step is not None,  # the trainer's word, not a guess
            already_finished=already_finished,
            cause=cause,
            failed_pod=failed_pod,
            log_tail=log_tail or [],
        )
        summary.training_curve = self._draw_curve(report, summary)
        with contextlib.suppress(OSError):
            (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=2) + "\n")
        return summary

    def _draw_curve(self, report: ProgressReport, summary: RunSummary) -> str | None:
        """Draw the trainer's curve into the run directory; the path, or None (said in warnings)."""
        if not report.curve:
            return None
        if not plotting_available():
            summary.warnings.append(f"training curve not drawn: {INSTALL_HINT}")
            return None
        title = f"kadapt run {summary.job}: {summary.strategy or '-'} ({summary.status.value})"
        try:
            return str(training_curve(report.curve, self.run_dir / CURVE_FILE, title))
        except (OSError, ValueError) as exc:
            summary.warnings.append(f"training curve not drawn: {exc}")
            return None


def _failure(gang: Gang, pod: LocalPod | None, last: ProgressReport | None) -> tuple[str, str, list[str]]:
    """Why the gang failed, the pod that explains it, and that pod's last log lines."""
    pod = pod or next((p for p in gang.pods if p.exit_code not in (0, None)), gang.rank0)
    # A pod that wrote a termination message (the trainer's bad-input cause) explains the gang's failure.
    pod = next((p for p in gang.pods if p.termination_message()), pod)
    lines, worker_code = worker_lines(pod.log_tail(400))
    cause = failure_cause(lines, worker_code if worker_code is not None else pod.exit_code)
    if last is not None and last.state == "failed" and last.message:
        cause = last.message
    return pod.termination_message() or cause, pod.plan.name, lines[-FAILURE_LOG_LINES:]


def summary_table(summary: RunSummary) -> Table:
    """The end-of-run table."""
    colour = {RunStatus.SUCCEEDED: "green", RunStatus.STOPPED: "yellow"}.get(summary.status, "red")
    table = Table(title=f"kadapt run {summary.job}: [{colour}]{summary.status.value}[/]", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    strategy = summary.strategy or "-"
    if summary.strategy_reason:
        strategy += f" ({summary.strategy_reason})"
    table.add_row("strategy", strategy)
    if summary.total_params:
        pct = 100.0 * summary.trainable_params / summary.total_params
        table.add_row("parameters", f"{summary.trainable_params:,} trainable of {summary.total_params:,} ({pct:.2f}%)")
    for key, value in sorted(summary.metrics.items()):
        table.add_row(key, f"{value:.4f}")
    if summary.loss is not None:
        table.add_row("train loss", f"{summary.loss:.4f}")
    table.add_row("steps", f"{summary.steps}/{summary.total_steps} (epoch {summary.epoch:.2f})")
    table.add_row("processes", f"{summary.workers} worker(s) x {summary.processes_per_worker}")
    note = " (resumed)" if summary.resumed else " (already finished: not run again)" if summary.already_finished else ""
    table.add_row("wall time", format_seconds(summary.wall_seconds) + note)
    table.add_row(
        "cost",
        f"{summary.cost:.4f} {summary.currency} = {summary.gpu_equivalents} GPU-equivalent(s) x "
        f"{format_seconds(summary.wall_seconds)} at {summary.price_per_gpu_hour:g} {summary.currency}/GPU-hour "
        f"({summary.gpu_type})",
    )
    for warning in summary.warnings:
        table.add_row("[yellow]warning[/]", Text(warning, style="yellow", overflow="fold"))
    if summary.output_path:
        table.add_row("output", Text(summary.output_path, overflow="fold"))
    if summary.training_curve:
        table.add_row("curve", Text(summary.training_curve, overflow="fold"))
    if summary.last_checkpoint and summary.status != RunStatus.SUCCEEDED:
        table.add_row("checkpoint", summary.last_checkpoint)
    table.add_row("run dir", summary.run_dir)
    if summary.cause:
        table.add_row("cause", summary.cause)
    return table


def report(summary: RunSummary, output: OutputFormat, out: Console, err: Console) -> None:
    """Print the summary: the failure context on stderr, then the table or the JSON on stdout."""
    if summary.status == RunStatus.INVALID:
        if output == OutputFormat.JSON:
            out.print_json(json.dumps(summary.to_json()))
        return
    if summary.status == RunStatus.FAILED and summary.log_tail:
        err.print(f"[red]{summary.failed_pod} failed; its last log lines:[/]")
        for line in summary.log_tail:
            err.print("  " + line, markup=False, highlight=False, soft_wrap=True)
    if summary.cause and summary.status == RunStatus.FAILED:
        err.print(f"[red]error:[/] {summary.cause}", highlight=False, soft_wrap=True)
    if output == OutputFormat.JSON:
        out.print_json(json.dumps(summary.to_json()))
    else:
        out.print(summary_table(summary))
        if summary.output_path and not out.is_terminal:
            # Piped or logged: the table cell may fold a long path; scripts get it on one line.
            out.print(f"output: {summary.output_path}", soft_wrap=True, highlight=False, markup=False)


def run(options: RunOptions, output: OutputFormat = OutputFormat.TEXT, *, show_progress: bool = True) -> int:
    """``kadapt run`` from start to end; returns the process exit code (0 only on success).

    Args:
        output: how the summary is printed (``--output``); a table or JSON on stdout.
    """
    err = Console(stderr=True)
    out = Console(soft_wrap=True) if output == OutputFormat.JSON else Console()
    try:
        local = LocalRun(options, console=err)
    except RunInvalid as exc:
        print_invalid(exc.source, exc.errors)
        if output == OutputFormat.JSON:
            invalid = RunSummary(
                job="",
                status=RunStatus.INVALID,
                run_dir="",
                exit_code=RunStatus.INVALID.exit_code,
                errors=[e.to_dict() for e in exc.errors],
            )
            report(invalid, output, out, err)
        return RunStatus.INVALID.exit_code
    summary = local.execute(show_progress=show_progress)
    report(summary, output, out, err)
    return summary.exit_code
