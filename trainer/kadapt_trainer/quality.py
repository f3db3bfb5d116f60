"""Adapting well by default: the recipe's calls into the probe, ``auto``, defaults and the report.

The recipe stays a sequence of phases; what decides *how well* a job adapts lives here:

- :func:`choose` (setup): fit the linear probe on cached features where it is used (head-only
  solves the head with it, ``auto`` measures the task with it, LP-FT starts partial, full and
  LoRA from it), resolve ``auto`` from the probe and projected costs, and fill the training
  settings the user left unset from the chosen strategy's defaults;
- :func:`final_reports` (save): the evaluation report of the final model on the validation
  split (and on ``dataset.testUri``), and the majority-class baseline check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kadapt_trainer import dist
from kadapt_trainer.config import StrategySpec, StrategyType, Task, TrainerConfig
from kadapt_trainer.data import Encoded, TextData, encode, load_text_data
from kadapt_trainer.defaults import defaults_for, resolve_training
from kadapt_trainer.errors import BadInputError
from kadapt_trainer.evaluate import Metrics, evaluate_features
from kadapt_trainer.probe import ProbeOutcome, run_probe
from kadapt_trainer.report import EvaluationReport, baseline_warning, classification_report, majority_class
from kadapt_trainer.strategies import base_of, count_params, decide_auto, find_blocks, find_head, resolve_auto

#: status.strategy.reason when the user chose the strategy.
REASON_CONFIGURED = "as configured in spec.strategy.type"


@dataclass
class Choice:
    """What setup decided: the strategy, the completed config, the probe and the records."""

    cfg: TrainerConfig
    spec: StrategySpec
    reason: str
    training: dict[str, Any]
    probe: ProbeOutcome | None = None
    decision: dict[str, Any] | None = None
    test: Encoded | None = None
    notes: list[str] = field(default_factory=list)
    data: TextData | None = None

    @property
    def head_solved(self) -> bool:
        """Head-only classification whose head the probe already solved: one planned step."""
        return self.probe is not None and StrategyType(self.spec.type) == StrategyType.HEAD_ONLY


def _wants_probe(cfg: TrainerConfig, feature_cache: bool) -> bool:
    """Classification only; head-only (on the cache), auto, and LP-FT for the rest."""
    if cfg.task != Task.SEQUENCE_CLASSIFICATION:
        return False
    configured = StrategyType(cfg.strategy.type)
    if configured == StrategyType.HEAD_ONLY:
        return feature_cache
    if configured == StrategyType.AUTO:
        return True
    return cfg.training.lp_ft


def _probe_iterations(cfg: TrainerConfig) -> int:
    """L-BFGS iterations per L2 candidate: head-only's ``epochs`` (set or default)."""
    if cfg.training.epochs is not None and StrategyType(cfg.strategy.type) == StrategyType.HEAD_ONLY:
        return cfg.training.epochs
    return defaults_for(StrategyType.HEAD_ONLY, cfg.task).epochs


def _workload(model: nn.Module, probe: ProbeOutcome, n_train: int, n_val: int) -> tuple[Any, int]:
    """The planner's view of this job (exact counts, measured token lengths) and the hidden size."""
    from kadapt_trainer.planning import Workload

    total = count_params(model)[1]
    emb = base_of(model).get_input_embeddings()
    embedding = int(emb.weight.numel()) if emb is not None else 0
    try:
        layers = len(find_blocks(model)[1])
    except BadInputError:
        layers = 1
    tokens = probe.tokens / max(1, n_train + n_val)
    hidden = int(probe.train_features.shape[-1])
    return Workload(total, embedding, layers, n_train, n_val, tokens), hidden


def _measured_hardware(cfg: TrainerConfig, workload: Any, probe: ProbeOutcome, world: int) -> Any:
    """Throughput per process as the probe's forward pass over the data measured it.

    Training FLOPs run at ``TRAINING_VS_FORWARD`` of that rate (backward, optimizer): without
    it the projections of partial, full and LoRA came out 2-3x short on CPU. On a GPU the
    probe's forward rate is already far from peak for small batches, so the share is kept at 1.
    """
    from kadapt_trainer.planning import FORWARD, TRAINING_VS_FORWARD, Hardware

    flops = FORWARD * workload.compute_params * probe.tokens
    rate = flops / max(probe.seconds, 1e-6) / max(1, world)
    return Hardware(
        world,
        cfg.gpus_per_process,
        rate,
        cfg.price_per_gpu_hour,
        cfg.currency,
        f"measured: the probe's forward pass, {rate / 1e9:.1f} GFLOP/s per process",
        training_rate_share=1.0 if cfg.gpus_per_process else TRAINING_VS_FORWARD,
    )


def load_test_split(cfg: TrainerConfig, data: TextData, tokenizer: Any) -> tuple[Encoded | None, list[str]]:
    """``dataset.testUri`` read like the training file, labels mapped to the training classes.

    Rows whose class never occurs in training are left out and counted in a note.
    """
    uri = cfg.dataset.test_uri
    if not uri or cfg.task != Task.SEQUENCE_CLASSIFICATION:
        return None, []
    ds = cfg.dataset.model_copy(update={"uri": uri, "validation_uri": None, "validation_split": 0.0, "test_uri": None})
    try:
        test = load_text_data(cfg.model_copy(update={"dataset": ds})).train
    except BadInputError as exc:
        raise BadInputError(f"dataset.testUri: {exc}") from exc
    known = set(data.label_names)
    keep = [i for i, label in enumerate(test.labels or []) if str(label) in known]
    notes = []
    if len(keep) < len(test.texts):
        notes.append(f"dataset.testUri: {len(test.texts) - len(keep)} rows with classes unseen in training left out")
    origins = getattr(test, "origins", [])
    update: dict[str, Any] = {
        "texts": [test.texts[i] for i in keep],
        "labels": [str((test.labels or [])[i]) for i in keep],
    }
    if len(origins) == len(test.texts):
        update["origins"] = [origins[i] for i in keep]
    records = dataclasses.replace(test, **update)
    with_names = dataclasses.replace(data, train=records, validation=None)
    return encode(records, tokenizer, with_names, cfg.dataset.max_length, cfg.task), notes


def choose(
    cfg: TrainerConfig,
    info: dist.DistInfo,
    data: TextData,
    model: nn.Module,
    train: Encoded,
    validation: Encoded | None,
    pad_id: int,
    device: torch.device,
    feature_cache: bool = True,
) -> Choice:
    """Probe (where used), resolve the strategy, fill the training defaults.

    The probe fits the model's new head in place, so every strategy applied afterwards starts
    from it (LP-FT); with ``training.lpFt: false`` the random head is put back before a
    partial, full or LoRA run.
    """
    configured = StrategyType(cfg.strategy.type)
    probe: ProbeOutcome | None = None
    decision: dict[str, Any] | None = None
    if _wants_probe(cfg, feature_cache):
        _, head = find_head(model, cfg.task)
        initial = {k: v.detach().clone() for k, v in head.state_dict().items()}
        probe = run_probe(model, train, validation, pad_id, info, device, _probe_iterations(cfg))
    if configured == StrategyType.AUTO:
        if probe is not None:
            workload, hidden = _workload(model, probe, len(train), len(validation) if validation else 0)
            hardware = _measured_hardware(cfg, workload, probe, info.world_size)
            auto = decide_auto(cfg, probe.result, workload, hardware, num_labels=data.num_labels, hidden=hidden)
            spec, reason, decision = auto.spec, auto.reason, auto.record
        else:
            spec, reason = resolve_auto(cfg, len(data.train.texts), model)
    else:
        spec, reason = cfg.strategy, REASON_CONFIGURED
    chosen = StrategyType(spec.type)
    if probe is not None and chosen != StrategyType.HEAD_ONLY and not cfg.training.lp_ft:
        find_head(model, cfg.task)[1].load_state_dict(initial)  # LP-FT off: the random head again
    if probe is not None and chosen == StrategyType.HEAD_ONLY and not feature_cache:
        probe = None  # head-only through the engine (benchmarks' no-cache baseline): trains as configured
    training, record = resolve_training(cfg.training, chosen, cfg.task)
    if probe is not None and chosen != StrategyType.HEAD_ONLY:
        record["lpFtStart"] = bool(cfg.training.lp_ft)
    resolved = cfg.model_copy(update={"training": training})
    return Choice(resolved, spec, reason, record, probe, decision)


def _report(metrics: dict[str, float], data: TextData, train: Encoded, split: str) -> EvaluationReport | None:
    """The report of one evaluation's confusion matrix (None without one)."""
    confusion = metrics.confusion if isinstance(metrics, Metrics) else None
    if not confusion or not train.labels:
        return None
    return classification_report(
        confusion, data.label_names, majority_class(train.labels), split, metrics.get("eval_loss")
    )


def evaluate_split(backend: Any, ctx: Any, split: Encoded) -> dict[str, float]:
    """Evaluate the backend's current model on another split (the test file)."""
    if hasattr(backend, "val_features"):  # cached head-only: features of the test split, then the head
        from kadapt_trainer.features import extract_features

        _, head = find_head(ctx.model, ctx.cfg.task)
        feats = extract_features(ctx.model, head, split, ctx.pad_id, ctx.info, backend.device)
        labels = torch.tensor(split.labels, dtype=torch.long)
        return evaluate_features(head, feats, labels, backend.device)
    saved = backend.ctx
    backend.ctx = dataclasses.replace(saved, validation=split)
    try:
        metrics: dict[str, float] = backend.evaluate()
        return metrics
    finally:
        backend.ctx = saved


def final_reports(
    backend: Any, ctx: Any, choice: Choice
) -> tuple[dict[str, dict[str, Any]], bool | None, list[str], dict[str, float]]:
    """(reports by split, better than the majority baseline, warnings, headline figures).

    The validation report decides the baseline flag; a job without validation data has none.
    """
    data, test = choice.data, choice.test
    if ctx.cfg.task != Task.SEQUENCE_CLASSIFICATION or data is None:
        return {}, None, [], {}
    reports: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    flag: bool | None = None
    headline: dict[str, float] = {}
    if ctx.has_validation:
        report = _report(backend.evaluate(), data, ctx.train, "validation")
        if report is not None:
            reports["validation"] = report.as_dict()
            flag = report.better_than_baseline
            headline.update(report.headline())
            if not flag:
                warnings.append(baseline_warning(report))
    if test is not None and len(test):
        report = _report(evaluate_split(backend, ctx, test), data, ctx.train, "test")
        if report is not None:
            reports["test"] = report.as_dict()
            headline.update({"test_accuracy": report.accuracy, "test_macro_f1": report.macro_f1})
    return reports, flag, warnings, headline
