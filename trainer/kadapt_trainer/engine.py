"""The DeepSpeed engine: config from the job, only trainable parameters, per-group learning rates."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kadapt_trainer.config import TrainerConfig, deep_merge, deepspeed_config

#: Where DeepSpeed caches JIT-built ops (one build per machine, not per run).
TORCH_EXTENSIONS_ENV = "TORCH_EXTENSIONS_DIR"
DEFAULT_TORCH_EXTENSIONS_DIR = Path("~/.cache/kadapt/torch_extensions")
#: Set to 1 to let DeepSpeed build and use its shared-memory CPU all-reduce op.
SHM_COMM_ENV = "KADAPT_DEEPSPEED_SHM"
SHM_OP = "deepspeed_shm_comm"
#: Default head learning rate as a multiple of the backbone's (a new head starts from random).
HEAD_LR_FACTOR = 20.0
NO_DECAY = ("bias", "norm", "ln_", "layernorm")


def prepare_deepspeed_env() -> None:
    """Cache JIT ops and, on CPU, skip the shared-memory comm op.

    DeepSpeed's CPU accelerator compiles a C++ shared-memory all-reduce at the first
    collective (1-2 minutes). It only speeds up large CPU all-reduces; plain gloo is correct
    and needs no compiler, so it is off unless ``KADAPT_DEEPSPEED_SHM=1``. DeepSpeed probes
    op compatibility once per process into ``deepspeed.ops.__compatible_ops__`` and keeps
    edits to that dict, which is what marks the op unavailable.
    """
    os.environ.setdefault(TORCH_EXTENSIONS_ENV, str(DEFAULT_TORCH_EXTENSIONS_DIR.expanduser()))
    if torch.cuda.is_available() or os.environ.get(SHM_COMM_ENV) == "1":
        return
    import deepspeed.ops

    compatible = deepspeed.ops.__compatible_ops__
    if isinstance(compatible, dict):
        compatible[SHM_OP] = False


def head_learning_rate(cfg: TrainerConfig) -> float:
    """The head's learning rate: configured, else 20x the base rate."""
    return cfg.training.head_learning_rate or cfg.training.resolved_learning_rate() * HEAD_LR_FACTOR


def is_head_param(name: str, head_names: list[str]) -> bool:
    """True for parameters inside the task head (also under PEFT's modules_to_save)."""
    dotted = f".{name}."
    return any(f".{head}." in dotted for head in head_names)


def param_groups(
    model: nn.Module, cfg: TrainerConfig, head_names: list[str], all_head: bool = False
) -> list[dict[str, Any]]:
    """Trainable parameters only, split by learning rate (head vs body) and weight decay.

    ``all_head`` marks every parameter as head (the cached-feature trainer passes the head itself).
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = all_head or is_head_param(name, head_names)
        decay = not any(tag in name.lower() for tag in NO_DECAY)
        groups.setdefault((head, decay), []).append(p)
    out = []
    for (head, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": head_learning_rate(cfg) if head else cfg.training.resolved_learning_rate(),
                "weight_decay": cfg.training.weight_decay if decay else 0.0,
            }
        )
    return out


def warmup_linear(total_steps: int, warmup_ratio: float) -> Any:
    """Linear warmup, then linear decay to zero (the usual fine-tuning schedule)."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def schedule_at(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Move a warm-up/decay schedule to ``step`` and set its optimizer's rates accordingly.

    A resume that restarts the optimizer (weights only) continues the schedule where the run
    was, instead of warming up again from zero.
    """
    scheduler.last_epoch = step
    rates = [base * factor(step) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports


def make_optimizer(
    model: nn.Module, cfg: TrainerConfig, head_names: list[str], total_steps: int, all_head: bool = False
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over trainable parameters with the warmup schedule."""
    groups = param_groups(model, cfg, head_names, all_head)
    optimizer = torch.optim.AdamW(groups, lr=cfg.training.resolved_learning_rate())
    warmup = warmup_linear(total_steps, cfg.training.resolved_warmup_ratio())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    return optimizer, scheduler


def engine_config(cfg: TrainerConfig, world_size: int) -> dict[str, Any]:
    """The job's DeepSpeed config plus what a client-side AdamW needs under ZeRO."""
    base = {"zero_allow_untested_optimizer": True}
    return deep_merge(base, deepspeed_config(cfg, world_size))


def build_engine(
    model: nn.Module, cfg: TrainerConfig, world_size: int, head_names: list[str], total_steps: int
) -> tuple[Any, torch.optim.Optimizer, Any]:
    """``deepspeed.initialize`` with our optimizer and scheduler (only trainable parameters)."""
    prepare_deepspeed_env()
    import deepspeed

    optimizer, scheduler = make_optimizer(model, cfg, head_names, total_steps)
    engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=engine_config(cfg, world_size),
        dist_init_required=True,
    )
    return engine, ds_optimizer, ds_scheduler


def init_process_group() -> None:
    """Start the process group the way DeepSpeed does (gloo on CPU, nccl on GPU)."""
    prepare_deepspeed_env()
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)
