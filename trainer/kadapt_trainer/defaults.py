"""Strategy-aware training defaults: what each strategy trains with when the user sets nothing.

One learning rate does not suit every strategy. Full and partial fine-tuning move pretrained
weights and want small rates (the BERT paper's 2e-5..5e-5, a little higher for small models
and few steps); LoRA's adapters start at zero and train at roughly ten times that (PEFT's
examples and the LoRA paper use 1e-4..5e-4); a new head is a small convex problem that
tolerates far larger steps. Epochs differ too: a few passes suit fine-tuning, while head-only
classification is solved to convergence on cached features (``probe.py``), where ``epochs``
caps the L-BFGS iterations of each regularisation candidate.

The CRD gives these fields no default (``null`` on the wire), so the trainer can tell "not
set" from "set to the default" after ``auto`` has picked the strategy; what was used, and
which values came from here, is recorded in status and ``kadapt-result.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kadapt_trainer.config import StrategyType, Task, TrainingSpec

#: The fields this module fills, by their wire (camelCase) names.
DEFAULTED_FIELDS = ("learningRate", "epochs", "warmupRatio")
#: An unset head rate is this multiple of the (resolved) learning rate, as the engine applies it.
HEAD_RATE_FACTOR = 20.0


@dataclass(frozen=True)
class StrategyDefaults:
    """Training settings of one strategy when the user sets none."""

    learning_rate: float
    epochs: int
    warmup_ratio: float


#: Per strategy (classification). Head-only's epochs cap L-BFGS iterations per L2 candidate.
STRATEGY_DEFAULTS: dict[StrategyType, StrategyDefaults] = {
    StrategyType.HEAD_ONLY: StrategyDefaults(learning_rate=1e-3, epochs=100, warmup_ratio=0.0),
    # partial: 3 epochs, not 5 (docs/benchmarks.md, Quality: top 2 of 6 blocks from the probe's
    # head, 0.718 vs 0.724 test accuracy at 40 per class, 0.782 vs 0.784 at 200, for 0.6-0.7x the
    # CPU time; early stopping keeps the best checkpoint either way).
    StrategyType.PARTIAL: StrategyDefaults(learning_rate=1e-4, epochs=3, warmup_ratio=0.1),
    StrategyType.FULL: StrategyDefaults(learning_rate=5e-5, epochs=5, warmup_ratio=0.1),
    StrategyType.LORA: StrategyDefaults(learning_rate=3e-4, epochs=5, warmup_ratio=0.06),
}
#: Causal-lm head-only trains the LM head through the engine (no cache): passes, not L-BFGS.
CAUSAL_LM_HEAD_ONLY = StrategyDefaults(learning_rate=1e-3, epochs=3, warmup_ratio=0.06)
#: Settings of a config whose strategy is not resolved yet (``auto`` before the probe): full's.
FALLBACK = STRATEGY_DEFAULTS[StrategyType.FULL]


def defaults_for(strategy: StrategyType | str, task: Task | str) -> StrategyDefaults:
    """The defaults of a concrete strategy for a task (``auto`` has none until it is resolved)."""
    strategy = StrategyType(strategy)
    if strategy == StrategyType.AUTO:
        raise ValueError("resolve auto before asking for its training defaults")
    if strategy == StrategyType.HEAD_ONLY and Task(task) == Task.CAUSAL_LM:
        return CAUSAL_LM_HEAD_ONLY
    return STRATEGY_DEFAULTS[strategy]


def resolve_training(
    training: TrainingSpec, strategy: StrategyType | str, task: Task | str
) -> tuple[TrainingSpec, dict[str, Any]]:
    """Fill every unset learning rate, epoch count and warm-up from the strategy's defaults.

    Returns:
        The completed spec (no ``None`` left in those fields) and the ``training`` record for
        status and the result: the values used plus ``defaulted``, the fields taken from here.
    """
    base = defaults_for(strategy, task)
    update: dict[str, Any] = {}
    defaulted: list[str] = []
    for wire, name in zip(DEFAULTED_FIELDS, ("learning_rate", "epochs", "warmup_ratio"), strict=True):
        if getattr(training, name) is None:
            update[name] = getattr(base, name)
            defaulted.append(wire)
    resolved = training.model_copy(update=update)
    record: dict[str, Any] = {
        "strategy": str(StrategyType(strategy)),
        "learningRate": resolved.learning_rate,
        "headLearningRate": resolved.head_learning_rate or (resolved.learning_rate or 0.0) * HEAD_RATE_FACTOR,
        "epochs": resolved.epochs,
        "warmupRatio": resolved.warmup_ratio,
        "maxSteps": resolved.max_steps,
        "globalBatchSize": resolved.global_batch_size,
        "lpFt": getattr(resolved, "lp_ft", True),
        "defaulted": defaulted,
    }
    return resolved, record
