"""One adaptation job as one recipe: ``setup``, ``train``, ``save``, ``cleanup``.

The shape follows torchtune's recipes: :class:`AdaptationRecipe` takes the resolved
:class:`TrainerConfig` (what to train) and :class:`RunOptions` (how it is driven: stop signal,
progress server, a step callback), and each phase is a short method. ``run(cfg)`` drives the
phases; ``__main__`` adds only argument parsing and exit codes, so that benchmarks and tests
can run a job in-process. The two ways of training live in ``backends.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kadapt_trainer import dist, quality
from kadapt_trainer.backends import (
    Backend,
    CachedHeadBackend,
    CrossWorldResume,
    EngineBackend,
    StepResult,
    TrainContext,
    make_plan,
)
from kadapt_trainer.checkpoint import CheckpointManager, StopSignal, TrainState, saved_world_size, tag_for
from kadapt_trainer.config import (
    RESULT_FILE,
    ProgressReport,
    StrategySpec,
    StrategyType,
    Task,
    TrainerConfig,
    resolve_uri,
)
from kadapt_trainer.data import TextData, encode, epoch_order, input_report, load_text_data
from kadapt_trainer.errors import BadInputError, check_finite_loss
from kadapt_trainer.evaluate import ACCURACY, EVAL_LOSS, PERPLEXITY, improved
from kadapt_trainer.hold import hold_after_step
from kadapt_trainer.modeling import check_precision, load_model, load_tokenizer, resolve_model_path
from kadapt_trainer.strategies import apply_strategy, resolve_auto
from kadapt_trainer.telemetry import Telemetry, progress_port

log = logging.getLogger("kadapt_trainer")

#: status.strategy.reason when the user chose the strategy (auto writes its own rule).
REASON_CONFIGURED = "as configured in spec.strategy.type"
#: Steps whose wall time the ETA averages over.
ETA_WINDOW = 20

#: Called on every rank after each optimizer step with (step, the step's loss over all ranks).
StepCallback = Callable[[int, float], None]


class Stopped(Exception):
    """Raised after the stop checkpoint is written; ``__main__`` exits 143."""

    def __init__(self, report: ProgressReport) -> None:
        super().__init__(report.message or "stopped")
        self.report = report


@dataclass(frozen=True)
class RunOptions:
    """How a recipe is driven, as opposed to what it trains (that is the TrainerConfig).

    Attributes:
        stop: set by SIGTERM/SIGINT; the loop checkpoints and raises :class:`Stopped`.
        serve: rank 0 serves ``/progress`` and ``/metrics`` (tests running many jobs turn it off).
        on_step: lets tests and benchmarks watch the loss without scraping ``/progress``.
        feature_cache: ``False`` runs head-only through the engine (the benchmarks' baseline).
    """

    stop: StopSignal = field(default_factory=StopSignal)
    serve: bool = True
    on_step: StepCallback | None = None
    feature_cache: bool = True


@dataclass(frozen=True)
class StepOutcome:
    """One optimizer step as every rank agrees on it (after the all-reduce)."""

    loss: float
    tokens: float
    seconds: float
    stop_requested: bool
    checkpoint_due: bool


def seed_everything(seed: int) -> None:
    """Same seed on every rank: identical new heads and identical data order."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_strategy(cfg: TrainerConfig, data: TextData, model: nn.Module) -> tuple[StrategySpec, str]:
    """The concrete strategy (auto resolved here, with its reason)."""
    if cfg.strategy.type == StrategyType.AUTO:
        return resolve_auto(cfg, len(data.train.texts), model)
    return cfg.strategy, REASON_CONFIGURED


def use_feature_cache(cfg: TrainerConfig, strategy: StrategyType) -> bool:
    """Head-only classification trains on cached features; causal-lm head-only goes through the engine."""
    return strategy == StrategyType.HEAD_ONLY and cfg.task == Task.SEQUENCE_CLASSIFICATION


def early_stopping_metric(cfg: TrainerConfig) -> str:
    """The watched metric; accuracy falls back to eval_loss where the task has no accuracy."""
    metric = cfg.training.early_stopping.metric
    return metric if (cfg.task == Task.SEQUENCE_CLASSIFICATION or metric != ACCURACY) else EVAL_LOSS


class AdaptationRecipe:
    """One job, phase by phase: ``setup`` -> ``train`` -> ``save``, and ``cleanup`` always.

    Raises (from the phases):
        BadInputError: in ``setup``, for config, data or model problems (before any training).
        Stopped: in ``train``, after checkpointing on SIGTERM/SIGINT.
    """

    def __init__(self, cfg: TrainerConfig, options: RunOptions | None = None) -> None:
        self.cfg = cfg
        self.options = options or RunOptions()
        self.started = time.monotonic()
        self.info = dist.ensure_launcher_env()
        report = ProgressReport(state="starting", output_uri=cfg.output.uri, world_size=self.info.world_size)
        self.telemetry = Telemetry(report)
        self.checkpoints = CheckpointManager(resolve_uri(cfg.checkpoint_uri()), cfg.checkpoint.keep, self.info)
        self.state = TrainState()
        self._ctx: TrainContext | None = None
        self._backend: Backend | None = None
        self._last_checkpoint = time.monotonic()
        self._step_seconds: list[float] = []
        self._order: tuple[int, list[int]] = (-1, [])
        #: Set when the checkpoint resumed from was written at another world size.
        self._cross_world: tuple[int, CrossWorldResume] | None = None
        self._choice: quality.Choice | None = None

    @property
    def ctx(self) -> TrainContext:
        """The prepared job (after ``setup``)."""
        if self._ctx is None:
            raise RuntimeError("AdaptationRecipe.setup() has not run")
        return self._ctx

    @property
    def choice(self) -> quality.Choice:
        """The strategy, resolved settings, probe and test split that ``setup`` chose."""
        if self._choice is None:
            raise RuntimeError("AdaptationRecipe.setup() has not run")
        return self._choice

    @property
    def backend(self) -> Backend:
        """The way of training that ``setup`` built."""
        if self._backend is None:
            raise RuntimeError("AdaptationRecipe.setup() has not run")
        return self._backend

    # --- setup -------------------------------------------------------------------------

    def setup(self) -> None:
        """Load and check everything (bad input fails here), build the backend, resume.

        The process group comes first: preparing may already need the ranks (the probe that
        auto and LP-FT fit gathers every rank's features).
        """
        from kadapt_trainer.engine import init_process_group

        if self.info.is_main and self.options.serve:
            self.telemetry.serve(progress_port(self.cfg.progress_port))
        init_process_group()
        self._ctx = self._prepare()
        self._announce()
        self._backend = self._build_backend()
        self._resume()

    def _prepare(self) -> TrainContext:
        """Data, tokenizer, step plan, model with its strategy applied, encoded examples."""
        cfg, info = self.cfg, self.info
        check_precision(cfg.training.precision)  # fp16 without CUDA, bf16 unsupported: refused (exit 2)
        data = load_text_data(cfg)
        model_path = resolve_model_path(cfg.model)
        tokenizer = load_tokenizer(model_path)
        plan = make_plan(cfg, len(data.train.texts), info.world_size)
        seed_everything(cfg.training.seed)
        model = load_model(model_path, cfg.task, data.label_names, tokenizer)
        max_length = cfg.dataset.max_length
        train = encode(data.train, tokenizer, data, max_length, cfg.task)
        validation = encode(data.validation, tokenizer, data, max_length, cfg.task) if data.validation else None
        pad_id = int(tokenizer.pad_token_id)
        device = dist.device_for(info)
        # probe, auto and the strategy's training defaults (quality.py); the head may be the probe's now
        test = quality.load_test_split(cfg, data, tokenizer)
        cache = self.options.feature_cache
        self._choice = quality.choose(cfg, info, data, model, train, validation, pad_id, device, cache)
        self.choice.test, self.choice.notes, self.choice.data = *test, data
        cfg = self.cfg = self.choice.cfg
        model, applied = apply_strategy(model, self.choice.spec, cfg.task, self.choice.reason)
        plan = make_plan(cfg, len(train), info.world_size)  # rows without tokens were dropped (data.encode)
        if self.choice.head_solved:  # the probe solved the head: one step reports it, one evaluation
            plan = dataclasses.replace(plan, steps_per_epoch=1, total_steps=1, epochs=1)
        ctx = TrainContext(cfg, info, plan, model, applied, tokenizer, train, validation, pad_id, device)
        return dataclasses.replace(ctx, probe=self.choice.probe)

    def _announce(self) -> None:
        """Strategy, parameter counts and plan into status, metrics and the log."""
        ctx = self.ctx
        applied = ctx.applied
        self.telemetry.update(
            total_steps=ctx.plan.total_steps,
            trainable_params=applied.trainable_params,
            total_params=applied.total_params,
            strategy=str(applied.strategy),
            strategy_reason=applied.reason,
            training=self.choice.training,
            probe=self.choice.probe.result.as_dict() if self.choice.probe else None,
            strategy_decision=self.choice.decision,
        )
        m = self.telemetry.metrics
        m.target_steps.set(ctx.plan.total_steps)
        m.trainable.set(applied.trainable_params)
        m.parameters.set(applied.total_params)
        if self.info.is_main:
            n_val = len(ctx.validation) if ctx.validation is not None else 0
            print(
                f"kadapt: strategy {applied.strategy} ({applied.reason}): "
                f"{applied.trainable_params} of {applied.total_params} parameters train; "
                f"{len(ctx.train)} train / {n_val} validation examples; {ctx.plan.total_steps} steps",
                flush=True,
            )
        inputs = input_report(ctx.train, ctx.validation)  # rows dropped and warnings: log, /progress, result
        self.telemetry.update(**inputs.fields())
        for line in inputs.lines() if self.info.is_main else []:
            print(line, flush=True)

    def _build_backend(self) -> Backend:
        """Cached features for head-only classification (unless turned off), else the engine."""
        if self.options.feature_cache and use_feature_cache(self.cfg, self.ctx.applied.strategy):
            return CachedHeadBackend(self.ctx)
        return EngineBackend(self.ctx)

    def _resume(self) -> None:
        """Continue from the newest checkpoint that loads on every rank, if any; say what loaded."""
        state = self.checkpoints.resume(self._load_for_resume)
        if state is None:
            if self.checkpoints.skipped:
                self._warn(
                    f"no checkpoint in {self.checkpoints.root} loaded ({', '.join(self.checkpoints.skipped)}); "
                    "training starts from step 0"
                )
            return
        self.state = state
        saved = self.checkpoints.last_saved
        note = f"resumed from {saved.name if saved else '?'} at step {state.global_step}"
        if self._cross_world is not None:
            note += self._cross_world_note(*self._cross_world)
            if self._cross_world[1] == CrossWorldResume.WEIGHTS:
                self.backend.continue_schedule(state.global_step)
            self._warn(note)
        elif self.info.is_main:
            print(f"kadapt: {note}", flush=True)
        self.telemetry.update(
            last_checkpoint=str(saved),
            eval_metrics=dict(state.eval_metrics),
            resumed_from_step=state.global_step,
            curve=list(state.curve),
        )
        self.telemetry.metrics.last_checkpoint.set(self.checkpoints.last_saved_at or 0.0)
        self.telemetry.metrics.steps.inc(state.global_step)

    def _load_for_resume(self, folder: Path) -> None:
        """Load a checkpoint, first checking the world size that wrote it.

        Raises:
            BadInputError: the checkpoint cannot load at this world size (ZeRO-3), naming both.
        """
        saved, world = saved_world_size(folder), self.info.world_size
        if saved is None or saved == world:
            self.backend.load(folder)
            return
        how = self.backend.cross_world_resume
        if how == CrossWorldResume.NONE:
            raise BadInputError(
                f"checkpoint {folder} was written by {saved} rank(s) and this run has {world}; "
                f"ZeRO-3 checkpoints load only at the world size that wrote them: run with {saved} rank(s) "
                "(resources.workers x gpusPerWorker) to resume, or delete the checkpoints to start over"
            )
        self.backend.load(folder, weights_only=how == CrossWorldResume.WEIGHTS)
        self._cross_world = (saved, how)

    def _cross_world_note(self, saved: int, how: CrossWorldResume) -> str:
        """How a checkpoint from another world size was taken over, for log, status and summary."""
        sizes = f" (checkpoint written by {saved} rank(s), this run has {self.info.world_size})"
        if how == CrossWorldResume.FULL:
            return sizes + ": weights, optimizer and schedule restored"
        return sizes + ": weights restored, optimizer state restarted (ZeRO partitions it per rank)"

    def _warn(self, line: str) -> None:
        """A warning in the log, ``/progress`` and the final result (the run summary shows it)."""
        if self.info.is_main:
            print(f"kadapt: warning: {line}", flush=True)
        self.telemetry.update(warnings=[*self.telemetry.snapshot().warnings, line])

    # --- train -------------------------------------------------------------------------

    def train(self) -> None:
        """Optimizer steps until the plan is done, early stopping ends it, or a stop signal."""
        plan = self.ctx.plan
        self.telemetry.update(
            state="training", step=self.state.global_step, epoch=self.state.global_step / plan.steps_per_epoch
        )
        while self.state.global_step < plan.total_steps and not self.state.early_stopped:
            outcome = self._train_step()
            check_finite_loss(outcome.loss, self.state.global_step + 1)  # NaN/inf fails the job (exit 2)
            self._record_step(outcome)
            saved = self._evaluate_if_due()
            if not saved and (self._checkpoint_step_due() or outcome.checkpoint_due or outcome.stop_requested):
                self._checkpoint()
            hold_after_step(self.state.global_step, self.options.stop, self.info.is_main)  # KADAPT_HOLD_AFTER_STEP
            if outcome.stop_requested:
                self.telemetry.update(state="stopped", message="stopped by signal; checkpoint saved")
                raise Stopped(self.telemetry.snapshot())

    def _batch_indices(self, step: int) -> list[int]:
        """The global batch of an optimizer step (deterministic in seed and step, for resume)."""
        plan = self.ctx.plan
        epoch = step // plan.steps_per_epoch
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.ctx.train), self.cfg.training.seed, epoch, plan.global_batch))
        pos = step % plan.steps_per_epoch
        return self._order[1][pos * plan.global_batch : (pos + 1) * plan.global_batch]

    def _train_step(self) -> StepOutcome:
        """One optimizer step, then one all-reduce of loss, tokens and the ranks' votes."""
        every_minutes = self.cfg.checkpoint.every_minutes
        t0 = time.perf_counter()
        result: StepResult = self.backend.train_step(self._batch_indices(self.state.global_step))
        time_due = (
            self.info.is_main
            and every_minutes is not None
            and time.monotonic() - self._last_checkpoint >= every_minutes * 60
        )
        stop = self.options.stop.requested
        loss, tokens, stop_votes, due_votes = dist.all_reduce_sum(
            [result.loss, float(result.tokens), float(stop), float(time_due)], self.backend.device
        )
        return StepOutcome(loss, tokens, time.perf_counter() - t0, stop_votes > 0, due_votes > 0)

    def _record_step(self, outcome: StepOutcome) -> None:
        """Advance the state; loss, throughput and ETA into metrics and ``/progress``."""
        plan = self.ctx.plan
        self.state.global_step += 1
        step = self.state.global_step
        self.state.epoch = step // plan.steps_per_epoch
        self.state.loss_since_point += outcome.loss
        self.state.steps_since_point += 1
        self._step_seconds.append(outcome.seconds)
        recent = self._step_seconds[-ETA_WINDOW:]
        per_second = plan.global_batch / outcome.seconds if outcome.seconds > 0 else None
        if self.options.on_step is not None:
            self.options.on_step(step, outcome.loss)
        m = self.telemetry.metrics
        m.steps.inc()
        m.train_loss.set(outcome.loss)
        m.step_duration.observe(outcome.seconds)
        m.samples_per_second.set(per_second or 0.0)
        m.tokens_per_second.set(outcome.tokens / outcome.seconds if outcome.seconds > 0 else 0.0)
        m.epoch.set(step / plan.steps_per_epoch)
        self.telemetry.update(
            step=step,
            epoch=step / plan.steps_per_epoch,
            loss=outcome.loss,
            samples_per_second=per_second,
            eta_seconds=sum(recent) / len(recent) * (plan.total_steps - step),
        )

    def _evaluate_if_due(self) -> bool:
        """Evaluate at each epoch end (and every ``evalEverySteps``), then checkpoint; True if saved."""
        step, plan = self.state.global_step, self.ctx.plan
        every = self.cfg.training.eval_every_steps
        epoch_end = step % plan.steps_per_epoch == 0 or step == plan.total_steps
        if not (epoch_end or (every and step % every == 0)):
            return False
        self.telemetry.update(state="evaluating")
        metrics = self.backend.evaluate()
        if metrics:
            self._track_best(metrics)
        self._add_curve_point(metrics)
        self.telemetry.update(state="training", eval_metrics=dict(self.state.eval_metrics))
        self._checkpoint()
        return True

    def _add_curve_point(self, metrics: dict[str, float]) -> None:
        """One point of the training curve per evaluation (``kadapt run`` draws it)."""
        state = self.state
        loss = state.loss_since_point / max(1, state.steps_since_point)
        epoch = state.global_step / self.ctx.plan.steps_per_epoch
        state.curve.append({"step": float(state.global_step), "epoch": epoch, "loss": loss, **metrics})
        state.loss_since_point, state.steps_since_point = 0.0, 0
        self.telemetry.update(curve=list(state.curve))

    def _track_best(self, metrics: dict[str, float]) -> None:
        """Remember the best evaluation; count evaluations without improvement for early stopping."""
        state, es = self.state, self.cfg.training.early_stopping
        state.eval_metrics = metrics
        self._set_eval_gauges(metrics)
        metric = early_stopping_metric(self.cfg)
        value = metrics.get(metric, metrics[EVAL_LOSS])
        if improved(metric, value, state.best_metric):
            state.best_metric = value
            state.best_step = state.global_step
            state.best_eval_metrics = dict(metrics)
            state.evals_without_improvement = 0
            return
        state.evals_without_improvement += 1
        if es.enabled and self.ctx.has_validation and state.evals_without_improvement >= es.patience:
            state.early_stopped = True

    def _set_eval_gauges(self, metrics: dict[str, float]) -> None:
        """Mirror evaluation results into the gauges."""
        m = self.telemetry.metrics
        for name, gauge in ((EVAL_LOSS, m.eval_loss), (ACCURACY, m.eval_accuracy), (PERPLEXITY, m.eval_perplexity)):
            if name in metrics:
                gauge.set(metrics[name])

    def _checkpoint_step_due(self) -> bool:
        """``checkpoint.everySteps`` reached."""
        every = self.cfg.checkpoint.every_steps
        return bool(every and self.state.global_step % every == 0)

    def _checkpoint(self) -> None:
        """Write one atomic checkpoint on every rank and report it."""
        self.telemetry.update(state="saving")
        folder = self.checkpoints.save(self.state, self.backend.save)
        self._last_checkpoint = time.monotonic()
        self.telemetry.update(state="training", last_checkpoint=str(folder))
        self.telemetry.metrics.last_checkpoint.set(time.time())

    # --- save --------------------------------------------------------------------------

    def save(self) -> ProgressReport:
        """Write the best model and the final report (``kadapt-result.json``); return the report."""
        self.telemetry.update(state="saving")
        final_metrics = self._restore_best()
        reports, better, warnings, headline = quality.final_reports(self.backend, self.ctx, self.choice)
        out_dir = resolve_uri(self.cfg.output.uri)
        self.backend.save_output(out_dir)
        final = self.telemetry.snapshot()
        final.state = "succeeded"
        final.step = self.state.global_step
        final.eval_metrics = {**final_metrics, **headline}
        final.evaluation, final.better_than_baseline = reports, better
        final.warnings = [*final.warnings, *self.choice.notes, *warnings]
        for line in warnings if self.info.is_main else []:
            print(f"kadapt: WARNING: {line}", flush=True)
        final.wall_seconds = time.monotonic() - self.started
        final.eta_seconds = 0.0
        final.message = "early stopped" if self.state.early_stopped else None
        self.telemetry.update(**final.model_dump(exclude={"wall_seconds"}))
        if self.info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / (RESULT_FILE + ".tmp")
            tmp.write_text(final.model_dump_json(indent=2))
            os.replace(tmp, out_dir / RESULT_FILE)
        dist.barrier()
        return final

    def _restore_best(self) -> dict[str, float]:
        """Load the best evaluation's weights when a later step ended the run; its metrics."""
        state = self.state
        if state.best_step is None or state.best_step == state.global_step:
            return dict(state.eval_metrics)
        best = self.checkpoints.root / tag_for(state.best_step)
        if not best.exists():
            return dict(state.eval_metrics)
        self.backend.load(best, weights_only=True)
        if self.info.is_main:
            print(f"kadapt: keeping the best model, from step {state.best_step}", flush=True)
        return dict(state.best_eval_metrics)

    # --- cleanup -----------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """Report a failure's first line in ``/progress`` before the process exits."""
        text = str(exc)
        self.telemetry.update(state="failed", message=text.splitlines()[0] if text else type(exc).__name__)

    def cleanup(self) -> None:
        """Stop serving ``/progress``."""
        self.telemetry.close()


def run(
    cfg: TrainerConfig,
    stop: StopSignal | None = None,
    serve: bool = True,
    on_step: StepCallback | None = None,
    feature_cache: bool = True,
) -> ProgressReport:
    """Train one job to completion (or to a stop signal) and return the final report.

    Raises:
        BadInputError: before any training, for config, data or model problems.
        Stopped: after checkpointing on SIGTERM/SIGINT.
    """
    recipe = AdaptationRecipe(cfg, RunOptions(stop or StopSignal(), serve, on_step, feature_cache))
    try:
        recipe.setup()
        recipe.train()
        return recipe.save()
    except Stopped:
        raise
    except BaseException as exc:
        recipe.fail(exc)
        raise
    finally:
        recipe.cleanup()


def load_config(path: Path) -> TrainerConfig:
    """The resolved TrainerConfig from JSON (or YAML), one clear line when invalid."""
    from pydantic import ValidationError

    if not path.is_file():
        raise BadInputError(f"--config {path}: file not found")
    text = path.read_text()
    try:
        raw = json.loads(text)
    except ValueError:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BadInputError(f"--config {path}: neither JSON nor YAML ({exc})") from exc
    try:
        return TrainerConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise BadInputError(f"--config {path}: {loc}: {err['msg']}{more}") from exc
