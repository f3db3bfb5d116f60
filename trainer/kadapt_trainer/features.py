"""Head-only on cached features: one backbone pass, then the head trains on the cache.

A frozen backbone maps each example to the same features every epoch, so computing them
once and training only the head on them gives exactly the gradients of head-only training
at a fraction of the cost (no backbone forward after the first pass). The features are the
head's own input, captured with a forward hook, so the trained head drops back into the
model unchanged and ``from_pretrained`` on the output predicts what was trained.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from kadapt_trainer import dist
from kadapt_trainer.config import Task
from kadapt_trainer.data import Encoded, collate

#: Examples per forward pass while extracting features (no gradients, so larger than training).
EXTRACT_BATCH = 32


def _reduce_head_input(x: torch.Tensor, head: nn.Module, input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Keep only what the head's output depends on.

    Decoder heads (``score``) are a Linear over every position; HF then picks the last
    non-pad token, so that token's state is the feature. Heads that take the sequence and
    use its first token (RoBERTa's) keep position 0. Pooled inputs pass through.
    """
    if x.dim() != 3:
        return x
    if isinstance(head, nn.Linear):
        if pad_id is None:
            last = torch.full((x.size(0),), x.size(1) - 1, dtype=torch.long)
        else:
            non_pad = (input_ids != pad_id).to(torch.int64)
            last = (torch.arange(input_ids.size(1)) * non_pad).argmax(-1)
        return x[torch.arange(x.size(0)), last.to(x.device)]
    return x[:, :1]


def extract_features(
    model: nn.Module,
    head: nn.Module,
    encoded: Encoded,
    pad_id: int,
    info: dist.DistInfo,
    device: torch.device,
) -> torch.Tensor:
    """The head's input for every example, computed once (each rank a share, then shared)."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach())

    handle = head.register_forward_pre_hook(hook)
    model.eval()
    mine = list(range(info.rank, len(encoded), info.world_size))
    # similar lengths batched together: less padding, same features
    by_length = sorted(range(len(mine)), key=lambda i: len(encoded.input_ids[mine[i]]))
    chunks: list[torch.Tensor] = []
    positions: list[int] = []
    config_pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    try:
        with torch.no_grad():
            for start in range(0, len(by_length), EXTRACT_BATCH):
                part = by_length[start : start + EXTRACT_BATCH]
                batch = collate(encoded, [mine[i] for i in part], pad_id, Task.SEQUENCE_CLASSIFICATION)
                batch.pop("labels")
                captured.clear()
                model(**{k: v.to(device) for k, v in batch.items()})
                chunks.append(_reduce_head_input(captured[-1], head, batch["input_ids"], config_pad).cpu())
                positions.extend(part)
    finally:
        handle.remove()
    if chunks:
        stacked = torch.cat(chunks)
        local = torch.empty_like(stacked)
        local[torch.tensor(positions)] = stacked
    else:
        local = torch.empty(0)
    if info.world_size == 1:
        return local
    gathered: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(gathered, (mine, local))
    shape: tuple[int, ...] | None = None
    for _, feats in gathered:
        if feats.numel():
            shape = tuple(feats.shape[1:])
            break
    assert shape is not None
    out = torch.empty((len(encoded), *shape), dtype=local.dtype if local.numel() else torch.float32)
    for idx, feats in gathered:
        if idx:
            out[torch.tensor(idx)] = feats
    return out


class CachedHeadTrainer:
    """Trains the head on cached features: the same loop on every rank, no communication.

    Every rank holds all features and computes the same full-batch update, so the heads stay
    identical without an all-reduce; rank 0 alone writes checkpoints and the output.
    """

    def __init__(
        self,
        head: nn.Module,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        device: torch.device,
        clip: float = 1.0,
    ) -> None:
        self.head = head
        self.features = train_features
        self.labels = train_labels
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.clip = clip

    def step(self, indices: list[int]) -> float:
        """One optimizer step on a global batch of cached features."""
        self.head.train()
        idx = torch.tensor(indices, dtype=torch.long)
        feats = self.features[idx].to(self.device)
        labels = self.labels[idx].to(self.device)
        logits = self.head(feats)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in self.head.parameters() if p.requires_grad], self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def evaluate(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Loss and accuracy of the head on cached validation features."""
        self.head.eval()
        loss_sum = correct = 0.0
        with torch.no_grad():
            for start in range(0, len(labels), 1024):
                feats = features[start : start + 1024].to(self.device)
                lab = labels[start : start + 1024].to(self.device)
                logits = self.head(feats).float()
                loss_sum += float(nn.functional.cross_entropy(logits, lab, reduction="sum"))
                correct += float((logits.argmax(-1) == lab).sum())
        n = max(1, len(labels))
        return {"eval_loss": loss_sum / n, "accuracy": correct / n}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume of the head phase needs."""
        return {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        """Restore :meth:`state_dict` (or only the head's weights, for the best checkpoint)."""
        self.head.load_state_dict(state["head"])
        if not weights_only:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])


def steps_per_epoch(n: int, global_batch: int) -> int:
    """Optimizer steps in one pass over the data (the last batch wraps around)."""
    return max(1, math.ceil(n / global_batch))
