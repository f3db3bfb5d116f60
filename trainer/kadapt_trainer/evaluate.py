"""Validation: loss, accuracy (classification), perplexity (causal-lm), summed over all ranks."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from kadapt_trainer import dist
from kadapt_trainer.config import Task
from kadapt_trainer.data import IGNORE_INDEX, Encoded, collate

EVAL_LOSS = "eval_loss"
ACCURACY = "accuracy"
PERPLEXITY = "perplexity"
#: Metrics where higher is better (the rest: lower is better).
HIGHER_IS_BETTER = frozenset({ACCURACY})


def loss_sums(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> tuple[float, float, float]:
    """(summed loss, counted targets, correct predictions) of one batch."""
    logits = logits.float()
    if task == Task.SEQUENCE_CLASSIFICATION:
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(-1) == labels).sum()
        return float(loss), float(labels.numel()), float(correct)
    shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))
    shift_labels = labels[:, 1:].reshape(-1)
    loss = nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (shift_labels != IGNORE_INDEX).sum()
    return float(loss), float(count), 0.0


def evaluate(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    encoded: Encoded,
    task: Task,
    pad_id: int,
    batch_size: int,
    info: dist.DistInfo,
    device: torch.device,
) -> dict[str, float]:
    """Metrics over the whole validation set, each rank taking a strided share.

    Every rank runs the same number of forwards (a rank that runs out repeats one example
    with zero weight), because ZeRO-3 gathers parameters collectively inside the forward.
    """
    mine = list(range(info.rank, len(encoded), info.world_size))
    per_rank = math.ceil(len(encoded) / info.world_size)
    batches = max(1, math.ceil(per_rank / batch_size))
    loss_sum = count = correct = 0.0
    with torch.no_grad():
        for b in range(batches):
            idx = mine[b * batch_size : (b + 1) * batch_size]
            weight = 1.0 if idx else 0.0
            batch = collate(encoded, idx or [0], pad_id, task)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = forward(batch)
            s, c, k = loss_sums(logits, batch["labels"], task)
            loss_sum += s * weight
            count += c * weight
            correct += k * weight
    loss_sum, count, correct = dist.all_reduce_sum([loss_sum, count, correct], device)
    mean = loss_sum / max(count, 1.0)
    metrics = {EVAL_LOSS: mean}
    if task == Task.SEQUENCE_CLASSIFICATION:
        metrics[ACCURACY] = correct / max(count, 1.0)
    else:
        metrics[PERPLEXITY] = math.exp(min(mean, 50.0))
    return metrics


def improved(metric: str, value: float, best: float | None) -> bool:
    """True when ``value`` beats ``best`` for this metric."""
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best
