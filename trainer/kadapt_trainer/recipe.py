"""One adaptation job, start to end: setup, train, save, clean up.

``run(cfg)`` is the whole trainer; ``__main__`` adds only argument parsing and exit codes,
so benchmarks and tests can drive it in-process. Two backends share one loop: the DeepSpeed
engine (every strategy) and the cached-feature head trainer (head-only classification).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from kadapt_trainer import dist
from kadapt_trainer.checkpoint import CheckpointManager, StopSignal, TrainState, tag_for
from kadapt_trainer.config import (
    RESULT_FILE,
    ProgressReport,
    StrategySpec,
    StrategyType,
    Task,
    TrainerConfig,
    gradient_accumulation,
    resolve_uri,
)
from kadapt_trainer.data import Encoded, TextData, collate, encode, epoch_order, load_text_data
from kadapt_trainer.errors import BadInputError
from kadapt_trainer.evaluate import ACCURACY, EVAL_LOSS, evaluate, improved
from kadapt_trainer.features import CachedHeadTrainer, extract_features, steps_per_epoch
from kadapt_trainer.hold import hold_after_step
from kadapt_trainer.modeling import load_model, load_tokenizer, resolve_model_path, write_pooled_code
from kadapt_trainer.strategies import AppliedStrategy, apply_strategy, find_head, resolve_auto
from kadapt_trainer.telemetry import Telemetry, progress_port

log = logging.getLogger("kadapt_trainer")

HEAD_STATE_FILE = "head.pt"
MERGED_DIR = "merged"


class Stopped(Exception):
    """Raised after the stop checkpoint is written; ``__main__`` exits 143."""

    def __init__(self, report: ProgressReport) -> None:
        super().__init__(report.message or "stopped")
        self.report = report


@dataclass
class Plan:
    """Step arithmetic of the job."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    global_batch: int
    accumulation: int


def make_plan(cfg: TrainerConfig, n_train: int, world_size: int) -> Plan:
    """Steps per epoch and in total (``maxSteps`` overrides ``epochs``)."""
    try:
        accumulation = gradient_accumulation(cfg.training, world_size)
    except ValueError as exc:
        raise BadInputError(str(exc)) from exc
    spe = steps_per_epoch(n_train, cfg.training.global_batch_size)
    total = cfg.training.max_steps or cfg.training.epochs * spe
    return Plan(spe, total, math.ceil(total / spe), cfg.training.global_batch_size, accumulation)


class Backend(Protocol):
    """What the shared loop needs from a way of training."""

    def train_step(self, indices: list[int]) -> tuple[float, int]:
        """One optimizer step on this global batch: (local mean loss, local tokens)."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (identical on every rank)."""

    def save(self, folder: Path) -> None:
        """Write this rank's part of a checkpoint."""

    def load(self, folder: Path, weights_only: bool = False) -> None:
        """Restore from a checkpoint (weights only: for the best model at the end)."""

    def save_output(self, out: Path) -> None:
        """Write the trained model (all ranks call; rank 0 writes)."""


class EngineBackend:
    """Every strategy on the DeepSpeed engine."""

    def __init__(
        self,
        cfg: TrainerConfig,
        model: nn.Module,
        applied: AppliedStrategy,
        train: Encoded,
        validation: Encoded | None,
        pad_id: int,
        info: dist.DistInfo,
        plan: Plan,
        tokenizer: Any,
    ) -> None:
        from kadapt_trainer.engine import build_engine

        self.cfg = cfg
        self.info = info
        self.plan = plan
        self.train = train
        self.validation = validation
        self.pad_id = pad_id
        self.tokenizer = tokenizer
        self.engine, self.optimizer, self.scheduler = build_engine(
            model, cfg, info.world_size, applied.head_names, plan.total_steps
        )
        self.device = self.engine.device
        self.micro = cfg.training.micro_batch_size

    def train_step(self, indices: list[int]) -> tuple[float, int]:
        self.engine.train()
        total = 0.0
        tokens = 0
        for k in range(self.plan.accumulation):
            start = (k * self.info.world_size + self.info.rank) * self.micro
            batch = collate(self.train, indices[start : start + self.micro], self.pad_id, self.cfg.task)
            tokens += int(batch["attention_mask"].sum())
            batch = {key: v.to(self.device) for key, v in batch.items()}
            loss = self.engine(**batch).loss
            self.engine.backward(loss)
            self.engine.step()
            total += float(loss.detach())
        return total / self.plan.accumulation, tokens

    def evaluate(self) -> dict[str, float]:
        if self.validation is None or len(self.validation) == 0:
            return {}
        self.engine.eval()

        def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

        return evaluate(forward, self.validation, self.cfg.task, self.pad_id, self.micro, self.info, self.device)

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(
            str(folder.parent), tag=folder.name, save_latest=False, exclude_frozen_parameters=True
        )

    def load(self, folder: Path, weights_only: bool = False) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder.parent),
            tag=folder.name,
            load_module_strict=False,
            load_optimizer_states=not weights_only,
            load_lr_scheduler_states=not weights_only,
            load_module_only=weights_only,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {folder}")

    def save_output(self, out: Path) -> None:
        model = self.engine.module
        zero3 = self.cfg.deepspeed.zero_stage == 3
        if zero3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
                if self.info.is_main:
                    _save_model(model, out, self.cfg, self.tokenizer, merge_in_place=False)
        elif self.info.is_main:
            _save_model(model, out, self.cfg, self.tokenizer, merge_in_place=True)
        dist.barrier()


class CachedHeadBackend:
    """Head-only classification: features once, then the head alone (see features.py)."""

    def __init__(
        self,
        cfg: TrainerConfig,
        model: nn.Module,
        train: Encoded,
        validation: Encoded | None,
        pad_id: int,
        info: dist.DistInfo,
        plan: Plan,
        tokenizer: Any,
        device: torch.device,
    ) -> None:
        from kadapt_trainer.engine import make_optimizer

        self.cfg = cfg
        self.info = info
        self.model = model.to(device)
        self.tokenizer = tokenizer
        _, head = find_head(model, cfg.task)
        self.train_features = extract_features(model, head, train, pad_id, info, device)
        assert train.labels is not None
        self.val_features: torch.Tensor | None = None
        self.val_labels: torch.Tensor | None = None
        if validation is not None and len(validation):
            assert validation.labels is not None
            self.val_features = extract_features(model, head, validation, pad_id, info, device)
            self.val_labels = torch.tensor(validation.labels, dtype=torch.long)
        optimizer, scheduler = make_optimizer(head, cfg, [], plan.total_steps, all_head=True)
        self.trainer = CachedHeadTrainer(
            head, self.train_features, torch.tensor(train.labels, dtype=torch.long), optimizer, scheduler, device
        )

    def train_step(self, indices: list[int]) -> tuple[float, int]:
        return self.trainer.step(indices), 0

    def evaluate(self) -> dict[str, float]:
        if self.val_features is None or self.val_labels is None:
            return {}
        return self.trainer.evaluate(self.val_features, self.val_labels)

    def save(self, folder: Path) -> None:
        if self.info.is_main:
            torch.save(self.trainer.state_dict(), folder / HEAD_STATE_FILE)

    def load(self, folder: Path, weights_only: bool = False) -> None:
        state = torch.load(folder / HEAD_STATE_FILE, map_location="cpu", weights_only=False)
        self.trainer.load_state_dict(state, weights_only=weights_only)

    def save_output(self, out: Path) -> None:
        if self.info.is_main:
            _save_model(self.model, out, self.cfg, self.tokenizer, merge_in_place=True)
        dist.barrier()


def _save_model(model: Any, out: Path, cfg: TrainerConfig, tokenizer: Any, merge_in_place: bool) -> None:
    """HF format (adapter for LoRA, optionally merged), tokenizer, pooled-model code."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    write_pooled_code(model, out)
    if cfg.output.merge_adapter and hasattr(model, "merge_and_unload"):
        import copy

        target = model if merge_in_place else copy.deepcopy(model)
        merged = target.merge_and_unload()
        merged_dir = out / MERGED_DIR
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        write_pooled_code(merged, merged_dir)


def seed_everything(seed: int) -> None:
    """Same seed on every rank: identical new heads and identical data order."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


#: status.strategy.reason when the user chose the strategy (auto writes its own rule).
REASON_CONFIGURED = "as configured in spec.strategy.type"


def _resolve_strategy(cfg: TrainerConfig, data: TextData, model: nn.Module) -> tuple[StrategySpec, str]:
    """The concrete strategy (auto resolved here, with its reason)."""
    if cfg.strategy.type == StrategyType.AUTO:
        return resolve_auto(cfg, len(data.train.texts), model)
    return cfg.strategy, REASON_CONFIGURED


def _use_feature_cache(cfg: TrainerConfig, spec: StrategySpec) -> bool:
    """Head-only classification trains on cached features; causal-lm head-only goes through the engine."""
    return spec.type == StrategyType.HEAD_ONLY and cfg.task == Task.SEQUENCE_CLASSIFICATION


#: Called on every rank after each optimizer step with (step, loss averaged over ranks).
StepCallback = Callable[[int, float], None]


def run(
    cfg: TrainerConfig,
    stop: StopSignal | None = None,
    serve: bool = True,
    on_step: StepCallback | None = None,
    feature_cache: bool = True,
) -> ProgressReport:
    """Train one job to completion (or to a stop signal) and return the final report.

    ``on_step`` lets tests and benchmarks watch the loss without scraping ``/progress``;
    ``feature_cache=False`` runs head-only through the engine (the benchmarks' baseline).

    Raises:
        BadInputError: before any training, for config, data or model problems.
        Stopped: after checkpointing on SIGTERM/SIGINT.
    """
    started = time.monotonic()
    info = dist.ensure_launcher_env()
    out_dir = resolve_uri(cfg.output.uri)
    ckpt_root = resolve_uri(cfg.checkpoint_uri())
    report = ProgressReport(state="starting", output_uri=cfg.output.uri, world_size=info.world_size)
    telemetry = Telemetry(report)
    if info.is_main and serve:
        telemetry.serve(progress_port(cfg.progress_port))
    stop = stop or StopSignal()
    try:
        return _run(cfg, info, out_dir, ckpt_root, telemetry, stop, started, on_step, feature_cache)
    except Stopped:
        raise
    except BaseException as exc:
        telemetry.update(state="failed", message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    finally:
        telemetry.close()


def _run(
    cfg: TrainerConfig,
    info: dist.DistInfo,
    out_dir: Path,
    ckpt_root: Path,
    telemetry: Telemetry,
    stop: StopSignal,
    started: float,
    on_step: StepCallback | None,
    feature_cache: bool = True,
) -> ProgressReport:
    # --- setup: everything that can be wrong with the input fails here, before training
    data = load_text_data(cfg)
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path)
    plan = make_plan(cfg, len(data.train.texts), info.world_size)
    seed_everything(cfg.training.seed)
    model = load_model(model_path, cfg.task, data.label_names, tokenizer)
    spec, reason = _resolve_strategy(cfg, data, model)
    model, applied = apply_strategy(model, spec, cfg.task, reason)
    pad_id = int(tokenizer.pad_token_id)
    train = encode(data.train, tokenizer, data, cfg.dataset.max_length)
    validation = encode(data.validation, tokenizer, data, cfg.dataset.max_length) if data.validation else None
    telemetry.update(
        total_steps=plan.total_steps,
        trainable_params=applied.trainable_params,
        total_params=applied.total_params,
        strategy=str(applied.strategy),
        strategy_reason=reason,
    )
    m = telemetry.metrics
    m.target_steps.set(plan.total_steps)
    m.trainable.set(applied.trainable_params)
    m.parameters.set(applied.total_params)
    if info.is_main:
        print(
            f"kadapt: strategy {applied.strategy} ({reason}): "
            f"{applied.trainable_params} of {applied.total_params} parameters train; "
            f"{len(train)} train / {len(validation) if validation else 0} validation examples; "
            f"{plan.total_steps} steps",
            flush=True,
        )

    # --- engine (or cached features) and resume
    from kadapt_trainer.engine import init_process_group

    init_process_group()
    device = dist.device_for(info)
    backend: Backend
    if feature_cache and _use_feature_cache(cfg, spec):
        backend = CachedHeadBackend(cfg, model, train, validation, pad_id, info, plan, tokenizer, device)
    else:
        backend = EngineBackend(cfg, model, applied, train, validation, pad_id, info, plan, tokenizer)
        device = backend.device
    manager = CheckpointManager(ckpt_root, cfg.checkpoint.keep, info)
    state = manager.resume(backend.load) or TrainState()
    if state.global_step and info.is_main:
        print(f"kadapt: resumed from {manager.last_saved} at step {state.global_step}", flush=True)
    if manager.last_saved is not None:
        telemetry.update(last_checkpoint=str(manager.last_saved), eval_metrics=dict(state.eval_metrics))
        m.last_checkpoint.set(manager.last_saved_at or 0.0)
    m.steps.inc(state.global_step)

    # --- train
    es = cfg.training.early_stopping
    es_metric = es.metric if (cfg.task == Task.SEQUENCE_CLASSIFICATION or es.metric != ACCURACY) else EVAL_LOSS
    early_stopping = es.enabled and validation is not None and len(validation) > 0
    every_minutes = cfg.checkpoint.every_minutes
    last_ckpt_time = time.monotonic()
    step_times: list[float] = []
    order: list[int] = []
    order_epoch = -1
    telemetry.update(state="training", step=state.global_step, epoch=state.global_step / plan.steps_per_epoch)

    def checkpoint() -> None:
        nonlocal last_ckpt_time
        telemetry.update(state="saving")
        folder = manager.save(state, backend.save)
        last_ckpt_time = time.monotonic()
        telemetry.update(state="training", last_checkpoint=str(folder))
        m.last_checkpoint.set(time.time())

    while state.global_step < plan.total_steps and not state.early_stopped:
        step = state.global_step
        epoch = step // plan.steps_per_epoch
        if epoch != order_epoch:
            order = epoch_order(len(train), cfg.training.seed, epoch, plan.global_batch)
            order_epoch = epoch
        pos = step % plan.steps_per_epoch
        t0 = time.perf_counter()
        loss, tokens = backend.train_step(order[pos * plan.global_batch : (pos + 1) * plan.global_batch])
        time_due = (
            info.is_main and every_minutes is not None and time.monotonic() - last_ckpt_time >= every_minutes * 60
        )
        loss_sum, tokens_sum, stop_votes, due_votes = dist.all_reduce_sum(
            [loss, float(tokens), 1.0 if stop.requested else 0.0, 1.0 if time_due else 0.0], device
        )
        elapsed = time.perf_counter() - t0
        state.global_step = step + 1
        state.epoch = state.global_step // plan.steps_per_epoch
        mean_loss = loss_sum / info.world_size
        step_times.append(elapsed)
        recent = step_times[-20:]
        avg = sum(recent) / len(recent)
        if on_step is not None:
            on_step(state.global_step, mean_loss)
        m.steps.inc()
        m.train_loss.set(mean_loss)
        m.step_duration.observe(elapsed)
        m.samples_per_second.set(plan.global_batch / elapsed if elapsed > 0 else 0.0)
        m.tokens_per_second.set(tokens_sum / elapsed if elapsed > 0 and tokens_sum else 0.0)
        m.epoch.set(state.global_step / plan.steps_per_epoch)
        telemetry.update(
            step=state.global_step,
            epoch=state.global_step / plan.steps_per_epoch,
            loss=mean_loss,
            samples_per_second=plan.global_batch / elapsed if elapsed > 0 else None,
            eta_seconds=avg * (plan.total_steps - state.global_step),
        )
        epoch_end = state.global_step % plan.steps_per_epoch == 0 or state.global_step == plan.total_steps
        eval_due = epoch_end or bool(
            cfg.training.eval_every_steps and state.global_step % cfg.training.eval_every_steps == 0
        )
        saved = False
        if eval_due:
            telemetry.update(state="evaluating")
            metrics = backend.evaluate()
            if metrics:
                state.eval_metrics = metrics
                _set_eval_metrics(telemetry, metrics)
                value = metrics.get(es_metric, metrics[EVAL_LOSS])
                if improved(es_metric, value, state.best_metric):
                    state.best_metric = value
                    state.best_step = state.global_step
                    state.best_eval_metrics = dict(metrics)
                    state.evals_without_improvement = 0
                else:
                    state.evals_without_improvement += 1
                    if early_stopping and state.evals_without_improvement >= es.patience:
                        state.early_stopped = True
            telemetry.update(state="training", eval_metrics=dict(state.eval_metrics))
            checkpoint()
            saved = True
        every = cfg.checkpoint.every_steps
        if not saved and ((every and state.global_step % every == 0) or due_votes > 0 or (stop_votes > 0)):
            checkpoint()
            saved = True
        hold_after_step(state.global_step, stop, info.is_main)  # KADAPT_HOLD_AFTER_STEP
        if stop_votes > 0:
            telemetry.update(state="stopped", message="stopped by signal; checkpoint saved")
            raise Stopped(telemetry.snapshot())

    # --- save the best model
    telemetry.update(state="saving")
    final_metrics = dict(state.eval_metrics)
    if state.best_step is not None and state.best_step != state.global_step:
        best = ckpt_root / tag_for(state.best_step)
        if best.exists():
            backend.load(best, weights_only=True)
            final_metrics = dict(state.best_eval_metrics)
            if info.is_main:
                print(f"kadapt: keeping the best model, from step {state.best_step}", flush=True)
    backend.save_output(out_dir)
    final = telemetry.snapshot()
    final.state = "succeeded"
    final.step = state.global_step
    final.eval_metrics = final_metrics
    final.wall_seconds = time.monotonic() - started
    final.eta_seconds = 0.0
    final.message = "early stopped" if state.early_stopped else None
    telemetry.update(**final.model_dump(exclude={"wall_seconds"}))
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / (RESULT_FILE + ".tmp")
        tmp.write_text(final.model_dump_json(indent=2))
        os.replace(tmp, out_dir / RESULT_FILE)
    dist.barrier()
    return final


def _set_eval_metrics(telemetry: Telemetry, metrics: dict[str, float]) -> None:
    """Mirror evaluation results into the gauges."""
    m = telemetry.metrics
    if EVAL_LOSS in metrics:
        m.eval_loss.set(metrics[EVAL_LOSS])
    if ACCURACY in metrics:
        m.eval_accuracy.set(metrics[ACCURACY])
    if "perplexity" in metrics:
        m.eval_perplexity.set(metrics["perplexity"])


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
