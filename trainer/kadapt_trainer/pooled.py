"""Sequence classification on a sentence-embedding backbone, pooled the way it was trained.

sentence-transformers models (all-MiniLM-L6-v2 and friends) are trained to mean-pool their
token states and normalise the result; a CLS-token head on them throws that away. This
model keeps the backbone's pooling. The file is self-contained (torch and transformers
only) because it is copied into every output folder as ``modeling_kadapt_pooled.py`` and
named in ``config.auto_map``: ``AutoModelForSequenceClassification.from_pretrained(out,
trust_remote_code=True)`` then loads it anywhere.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING_MEAN = "mean"
POOLING_CLS = "cls"
POOLING_MAX = "max"


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str, normalize: bool) -> torch.Tensor:
    """One vector per sequence from token states, padding ignored."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == POOLING_CLS:
        out = hidden[:, 0]
    elif mode == POOLING_MAX:
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    else:
        out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if normalize:
        out = nn.functional.normalize(out, p=2, dim=-1)
    return out


class PooledSequenceClassifier(PreTrainedModel):
    """Backbone (any AutoModel), the backbone's own pooling, then a linear classifier."""

    config_class = PreTrainedConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True

    def __init__(self, config: PreTrainedConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config)
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # the CLS pooler is not how this backbone was trained
        self.classifier = nn.Linear(config.hidden_size, int(config.num_labels or 2))
        self.post_init()

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The sentence embedding the backbone was trained to produce."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(
            hidden,
            attention_mask,
            getattr(self.config, "kadapt_pooling", POOLING_MEAN),
            bool(getattr(self.config, "kadapt_normalize", False)),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Logits (and cross-entropy loss when labels are given)."""
        logits = self.classifier(self.pooled(input_ids, attention_mask))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
