"""The training objective as sums over targets, so every target weighs the same.

A target is what the loss is averaged over: one example in classification, one predicted
token in causal-lm (every non-padding position after the first). Training and evaluation
both sum the per-target losses and divide by the number of targets of the whole optimizer
step (or validation set), never by a micro-batch's own count: averaging per micro-batch
would weight a short example more or less depending on how the examples were batched, and
the loss and gradient of a step would depend on the micro-batch size and the world size.
"""

from __future__ import annotations

import torch
from torch import nn

from kadapt_trainer.config import Task
from kadapt_trainer.data import IGNORE_INDEX


def target_count(labels: torch.Tensor, task: Task) -> int:
    """Targets in one batch: examples (classification) or predicted tokens (causal-lm)."""
    if task == Task.SEQUENCE_CLASSIFICATION:
        return int(labels.numel())
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def summed_loss(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
    """The sum (not the mean) of the per-target cross-entropy losses of one batch, in fp32.

    Causal-lm shifts by one position, as Hugging Face's models do: position ``t`` predicts
    token ``t + 1``; padding carries ``IGNORE_INDEX`` and counts for nothing.
    """
    logits = logits.float()
    if task == Task.SEQUENCE_CLASSIFICATION:
        return nn.functional.cross_entropy(logits, labels, reduction="sum")
    shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))
    shift_labels = labels[:, 1:].reshape(-1)
    return nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
