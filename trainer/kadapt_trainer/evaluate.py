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
MACRO_F1 = "macro_f1"
#: Metrics where higher is better (the rest: lower is better).
HIGHER_IS_BETTER = frozenset({ACCURACY, MACRO_F1})


class Metrics(dict[str, float]):
    """Evaluation figures, plus the confusion matrix they came from (classification).

    A plain ``dict`` to everything that stores or serves it; the recipe reads ``confusion``
    to build the final report (``kadapt_trainer.report``).
    """

    confusion: list[list[int]] | None = None


def _with_confusion(metrics: dict[str, float], confusion: list[list[int]] | None) -> Metrics:
    """``metrics`` plus macro-F1 and the matrix (classification)."""
    out = Metrics(metrics)
    if confusion is not None and confusion:
        from kadapt_trainer.report import classification_report

        out[MACRO_F1] = classification_report(confusion, [str(i) for i in range(len(confusion))], 0).macro_f1
        out.confusion = confusion
    return out


def _confusion_counts(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Flattened [true][predicted] counts of one batch (float64, for the all-reduce)."""
    pred = logits.argmax(-1)
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx.cpu(), minlength=num_classes * num_classes).double()


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
    confusion: torch.Tensor | None = None
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
            if task == Task.SEQUENCE_CLASSIFICATION:
                counts = _confusion_counts(logits, batch["labels"], logits.size(-1)) * weight
                confusion = counts if confusion is None else confusion + counts
    flat = confusion.tolist() if confusion is not None else []
    reduced = dist.all_reduce_sum([loss_sum, count, correct, *flat], device)
    loss_sum, count, correct = reduced[:3]
    mean = loss_sum / max(count, 1.0)
    metrics = {EVAL_LOSS: mean}
    matrix: list[list[int]] | None = None
    if task == Task.SEQUENCE_CLASSIFICATION:
        metrics[ACCURACY] = correct / max(count, 1.0)
        k = math.isqrt(len(flat))
        matrix = [[round(v) for v in reduced[3 + r * k : 3 + (r + 1) * k]] for r in range(k)]
    else:
        metrics[PERPLEXITY] = math.exp(min(mean, 50.0))
    return _with_confusion(metrics, matrix)


def evaluate_features(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, device: torch.device) -> Metrics:
    """Loss, accuracy, macro-F1 and the confusion matrix of a head on cached features."""
    head.eval()
    loss_sum = correct = 0.0
    confusion: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(labels), 1024):
            feats = features[start : start + 1024].to(device)
            lab = labels[start : start + 1024].to(device)
            logits = head(feats).float()
            loss_sum += float(nn.functional.cross_entropy(logits, lab, reduction="sum"))
            correct += float((logits.argmax(-1) == lab).sum())
            counts = _confusion_counts(logits, lab, logits.size(-1))
            confusion = counts if confusion is None else confusion + counts
    n = max(1, len(labels))
    k = 0 if confusion is None else math.isqrt(confusion.numel())
    matrix = None if confusion is None else confusion.round().long().view(k, k).tolist()
    return _with_confusion({EVAL_LOSS: loss_sum / n, ACCURACY: correct / n}, matrix)


def improved(metric: str, value: float, best: float | None) -> bool:
    """True when ``value`` beats ``best`` for this metric."""
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best
