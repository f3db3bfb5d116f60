"""The two ways the recipe trains, both built from one :class:`TrainContext`.

* :class:`EngineBackend`: every strategy on the DeepSpeed engine.
* :class:`CachedHeadBackend`: head-only classification on cached backbone features
  (see ``features.py``): one backbone pass, then the head alone.

The recipe's loop only sees the :class:`Backend` protocol, so a third way of training (or a
test double) plugs in without touching the loop.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from kadapt_trainer import dist
from kadapt_trainer.config import Precision, TrainerConfig, gradient_accumulation
from kadapt_trainer.data import Encoded, collate
from kadapt_trainer.errors import BadInputError
from kadapt_trainer.evaluate import evaluate, evaluate_features
from kadapt_trainer.features import CachedHeadTrainer, extract_features, steps_per_epoch
from kadapt_trainer.losses import summed_loss, target_count
from kadapt_trainer.modeling import write_pooled_code
from kadapt_trainer.probe import ProbeOutcome
from kadapt_trainer.strategies import AppliedStrategy, find_head

#: The cached-feature backend's checkpoint (head, optimizer, scheduler), written by rank 0.
HEAD_STATE_FILE = "head.pt"
#: Sub-folder of the output with the LoRA adapter merged into the base (``output.mergeAdapter``).
MERGED_DIR = "merged"


@dataclass(frozen=True)
class Plan:
    """Step arithmetic of the job."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    global_batch: int
    accumulation: int


def make_plan(cfg: TrainerConfig, n_train: int, world_size: int) -> Plan:
    """Steps per epoch and in total (``maxSteps`` overrides ``epochs``).

    Raises:
        BadInputError: when the global batch does not split into micro-batches on this world size.
    """
    try:
        accumulation = gradient_accumulation(cfg.training, world_size)
    except ValueError as exc:
        raise BadInputError(str(exc)) from exc
    spe = steps_per_epoch(n_train, cfg.training.global_batch_size)
    total = cfg.training.max_steps or cfg.training.resolved_epochs() * spe
    return Plan(spe, total, math.ceil(total / spe), cfg.training.global_batch_size, accumulation)


@dataclass(frozen=True)
class TrainContext:
    """Everything a backend is built from: the job, this rank, the prepared model and data.

    The recipe's ``setup`` fills it once; backends read it and keep no copies of the parts.
    """

    cfg: TrainerConfig
    info: dist.DistInfo
    plan: Plan
    model: nn.Module
    applied: AppliedStrategy
    tokenizer: Any
    train: Encoded
    validation: Encoded | None
    pad_id: int
    device: torch.device
    #: The linear probe fitted in setup (head-only's solve, auto's probe, LP-FT's start), if any.
    probe: ProbeOutcome | None = None

    @property
    def has_validation(self) -> bool:
        """True when there is at least one validation example."""
        return self.validation is not None and len(self.validation) > 0


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports from this rank.

    ``loss`` is this rank's share: summed over all ranks it is the step's loss.
    ``tokens`` counts this rank's non-padding input tokens (0 where not measured).
    """

    loss: float
    tokens: int


class CrossWorldResume(StrEnum):
    """What of a checkpoint written at another world size loads into a backend."""

    #: Everything: weights, optimizer and schedule (the state is not partitioned per rank).
    FULL = "full"
    #: The model weights only; the optimizer restarts and the schedule continues at the step
    #: (ZeRO-1/2 and the bf16 optimizer partition the optimizer state by rank).
    WEIGHTS = "weights"
    #: Nothing (ZeRO-3 partitions the weights too): the run must use the original world size.
    NONE = "none"


class Backend(Protocol):
    """What the recipe's loop needs from a way of training."""

    device: torch.device
    #: How a checkpoint from another world size loads (see :class:`CrossWorldResume`).
    cross_world_resume: CrossWorldResume

    def train_step(self, indices: list[int]) -> StepResult:
        """One optimizer step on this global batch (every rank gets the same indices)."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (identical on every rank)."""

    def save(self, folder: Path) -> None:
        """Write this rank's part of a checkpoint."""

    def load(self, folder: Path, weights_only: bool = False) -> None:
        """Restore from a checkpoint (weights only: for the best model at the end)."""

    def continue_schedule(self, step: int) -> None:
        """Put the learning-rate schedule at ``step`` (after a weights-only resume)."""

    def save_output(self, out: Path) -> None:
        """Write the trained model (all ranks call; rank 0 writes)."""


def engine_cross_world_resume(cfg: TrainerConfig) -> CrossWorldResume:
    """What of a DeepSpeed checkpoint loads at another world size.

    Without ZeRO the optimizer state sits whole in the model-states file (except under the
    bf16 optimizer, which partitions it); ZeRO-1/2 partition the optimizer state but keep the
    weights whole; ZeRO-3 partitions the weights too.
    """
    if cfg.deepspeed.zero_stage == 3:
        return CrossWorldResume.NONE
    if cfg.deepspeed.zero_stage == 0 and cfg.training.precision != Precision.BF16:
        return CrossWorldResume.FULL
    return CrossWorldResume.WEIGHTS


class EngineBackend:
    """Every strategy on the DeepSpeed engine."""

    def __init__(self, ctx: TrainContext) -> None:
        from kadapt_trainer.engine import build_engine

        self.ctx = ctx
        self.engine, self.optimizer, self.scheduler = build_engine(
            ctx.model, ctx.cfg, ctx.info.world_size, ctx.applied.head_names, ctx.plan.total_steps
        )
        self.device: torch.device = self.engine.device
        self.cross_world_resume = engine_cross_world_resume(ctx.cfg)

    def train_step(self, indices: list[int]) -> StepResult:
        """One optimizer step in which every target of the global batch weighs the same.

        Each micro-batch contributes the sum of its per-target losses divided by the number of
        targets of the whole step (all micro-batches of all ranks, all-reduced). DeepSpeed
        divides a micro-batch's loss by the accumulation steps in ``backward`` and averages
        gradients over the ranks, so the loss is multiplied by both first: the step's gradient
        is that of sum(per-target losses) / targets, whatever the micro-batch and world size.
        """
        ctx = self.ctx
        batches = self._micro_batches(indices)
        local_targets = sum(target_count(b["labels"], ctx.cfg.task) for b in batches)
        targets = max(1.0, dist.all_reduce_sum([float(local_targets)], self.device)[0])
        scale = ctx.plan.accumulation * ctx.info.world_size / targets
        self.engine.train()
        share = 0.0
        for batch in batches:
            batch = {key: v.to(self.device) for key, v in batch.items()}
            logits = self.engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = summed_loss(logits, batch["labels"], ctx.cfg.task)
            self.engine.backward(loss * scale)
            self.engine.step()
            share += float(loss.detach()) / targets
        return StepResult(share, sum(int(b["attention_mask"].sum()) for b in batches))

    def _micro_batches(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of a global batch: micro-batch k of rank r is slice k x world + r."""
        ctx = self.ctx
        micro = ctx.cfg.training.micro_batch_size
        starts = [(k * ctx.info.world_size + ctx.info.rank) * micro for k in range(ctx.plan.accumulation)]
        return [collate(ctx.train, indices[s : s + micro], ctx.pad_id, ctx.cfg.task) for s in starts]

    def evaluate(self) -> dict[str, float]:
        """Loss and the task's metric over the validation split, each rank a share."""
        ctx = self.ctx
        if ctx.validation is None or not ctx.has_validation:
            return {}
        self.engine.eval()

        def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

        micro = ctx.cfg.training.micro_batch_size
        return evaluate(forward, ctx.validation, ctx.cfg.task, ctx.pad_id, micro, ctx.info, self.device)

    def save(self, folder: Path) -> None:
        """DeepSpeed's own checkpoint (frozen parameters left out: they never change)."""
        self.engine.save_checkpoint(
            str(folder.parent), tag=folder.name, save_latest=False, exclude_frozen_parameters=True
        )

    def load(self, folder: Path, weights_only: bool = False) -> None:
        """DeepSpeed's loader; ``weights_only`` skips optimizer and scheduler state."""
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

    def continue_schedule(self, step: int) -> None:
        """The fresh optimizer's learning rates as the schedule has them at ``step``."""
        from kadapt_trainer.engine import schedule_at

        schedule_at(self.scheduler, step)

    def save_output(self, out: Path) -> None:
        """HF format; under ZeRO-3 the parameters are gathered first."""
        model = self.engine.module
        ctx = self.ctx
        if ctx.cfg.deepspeed.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
                if ctx.info.is_main:
                    save_model(model, out, ctx, merge_in_place=False)
        elif ctx.info.is_main:
            save_model(model, out, ctx, merge_in_place=True)
        dist.barrier()


class CachedHeadBackend:
    """Head-only classification: features once, then the head alone (see features.py)."""

    def __init__(self, ctx: TrainContext) -> None:
        from kadapt_trainer.engine import make_optimizer

        self.ctx = ctx
        self.device = ctx.device
        self.cross_world_resume = CrossWorldResume.FULL  # rank 0's file holds the whole state
        model = ctx.model.to(ctx.device)
        _, head = find_head(model, ctx.cfg.task)
        assert ctx.train.labels is not None
        self.val_features: torch.Tensor | None = None
        self.val_labels: torch.Tensor | None = None
        if ctx.probe is not None:  # the head is already solved on these features (probe.py)
            features = ctx.probe.train_features
            self.val_features, self.val_labels = ctx.probe.val_features, ctx.probe.val_labels
        else:
            features = extract_features(model, head, ctx.train, ctx.pad_id, ctx.info, ctx.device)
        if ctx.probe is None and ctx.validation is not None and ctx.has_validation:
            assert ctx.validation.labels is not None
            self.val_features = extract_features(model, head, ctx.validation, ctx.pad_id, ctx.info, ctx.device)
            self.val_labels = torch.tensor(ctx.validation.labels, dtype=torch.long)
        optimizer, scheduler = make_optimizer(head, ctx.cfg, [], ctx.plan.total_steps, all_head=True)
        labels = torch.tensor(ctx.train.labels, dtype=torch.long)
        self.trainer = CachedHeadTrainer(head, features, labels, optimizer, scheduler, ctx.device)

    def train_step(self, indices: list[int]) -> StepResult:
        """Every rank computes the same full-batch step, so each reports 1/world of its loss.

        With a probe the head is already at the optimum: the one planned step reports its loss.
        """
        if self.ctx.probe is not None:
            return StepResult(self.ctx.probe.result.train_loss / self.ctx.info.world_size, 0)
        return StepResult(self.trainer.step(indices) / self.ctx.info.world_size, 0)

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy of the head on the cached validation features."""
        if self.val_features is None or self.val_labels is None:
            return {}
        return evaluate_features(self.trainer.head, self.val_features, self.val_labels, self.device)

    def save(self, folder: Path) -> None:
        """Rank 0 writes head, optimizer and scheduler (identical on every rank)."""
        if self.ctx.info.is_main:
            torch.save(self.trainer.state_dict(), folder / HEAD_STATE_FILE)

    def load(self, folder: Path, weights_only: bool = False) -> None:
        """Every rank reads rank 0's file."""
        state = torch.load(folder / HEAD_STATE_FILE, map_location="cpu", weights_only=False)
        self.trainer.load_state_dict(state, weights_only=weights_only)

    def continue_schedule(self, step: int) -> None:
        """The head's learning rate as the schedule has it at ``step``."""
        from kadapt_trainer.engine import schedule_at

        schedule_at(self.trainer.scheduler, step)

    def save_output(self, out: Path) -> None:
        """The whole model (frozen backbone plus trained head) in HF format."""
        if self.ctx.info.is_main:
            save_model(self.ctx.model, out, self.ctx, merge_in_place=True)
        dist.barrier()


def save_model(model: Any, out: Path, ctx: TrainContext, merge_in_place: bool) -> None:
    """HF format (adapter for LoRA, optionally merged), tokenizer, pooled-model code."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    ctx.tokenizer.save_pretrained(str(out))
    write_pooled_code(model, out)
    if ctx.cfg.output.merge_adapter and hasattr(model, "merge_and_unload"):
        target = model if merge_in_place else copy.deepcopy(model)
        merged = target.merge_and_unload()
        merged_dir = out / MERGED_DIR
        merged.save_pretrained(str(merged_dir))
        ctx.tokenizer.save_pretrained(str(merged_dir))
        write_pooled_code(merged, merged_dir)
