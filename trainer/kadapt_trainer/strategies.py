"""Applying an adaptation strategy to a model: which parameters train, counted exactly.

Plain functions on ``nn.Module`` so that tests and benchmarks can apply a strategy without
running the trainer. ``auto`` is resolved here too, by the rules in :func:`resolve_auto`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from kadapt_trainer.config import LoraSpec, PartialSpec, StrategySpec, StrategyType, Task, TrainerConfig
from kadapt_trainer.errors import BadInputError

if TYPE_CHECKING:
    from kadapt_trainer.planning import Estimate, Hardware, Workload
    from kadapt_trainer.probe import ProbeResult

#: Attribute names of a newly initialised classification head, in HF's naming.
CLASSIFIER_HEADS = ("classifier", "score")
#: Names that transformer block lists have in BERT/RoBERTa (layer), GPT-2 (h), Llama (layers), T5 (block).
BLOCK_LIST_NAMES = ("layer", "layers", "h", "block", "blocks")
#: LoRA targets per ``config.model_type`` (attention projections, the usual choice).
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "mpnet": ["q", "k", "v"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
}

# The measured ``auto`` for classification (documented in decide_auto).
#: A probe validation accuracy at or above this leaves no room worth fine-tuning for.
AUTO_PROBE_GOOD_ENOUGH = 0.97
#: Fewer training examples per class than this: fine-tuning is too noisy to beat the probe.
#: Measured (docs/benchmarks.md, Quality): at 40 per class partial fine-tuning from the probe's
#: head beat the probe by +0.04 to +0.05 test and validation accuracy (the old floor of 100 kept
#: the probe there); below 40 per class nothing was measured, so the probe stays.
AUTO_MIN_PER_CLASS = 40
#: From this many examples per class on, fine-tuning every weight pays (and partial before it).
AUTO_FULL_PER_CLASS = 2_000

# Rules of ``auto`` without a probe (causal-lm; documented in resolve_auto).
AUTO_SMALL_DATA = 1_000
AUTO_LARGE_DATA = 50_000
AUTO_LARGE_MODEL = 1_000_000_000
AUTO_PARTIAL_FRACTION = 3  # partial trains the top third of the blocks


@dataclass
class AppliedStrategy:
    """What a strategy did to the model: the counts the job's status reports."""

    strategy: StrategyType
    reason: str | None
    trainable_params: int
    total_params: int
    head_names: list[str] = field(default_factory=list)
    trainable_names: list[str] = field(default_factory=list)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, shared weights counted once."""
    trainable = total = 0
    for p in model.parameters():
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _numel(p: nn.Parameter) -> int:
    """Full size even when ZeRO-3 has partitioned the parameter away."""
    return int(getattr(p, "ds_numel", p.numel()))


def base_of(model: nn.Module) -> Any:
    """The transformers model under a PEFT wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def find_head(model: nn.Module, task: Task) -> tuple[str, nn.Module]:
    """The task head: ``classifier``/``score`` for classification, the LM head for causal-lm."""
    base = base_of(model)
    if task == Task.SEQUENCE_CLASSIFICATION:
        for name in CLASSIFIER_HEADS:
            head = getattr(base, name, None)
            if isinstance(head, nn.Module):
                return name, head
        raise BadInputError(
            f"model: cannot find the classification head of {type(base).__name__} "
            f"(looked for {', '.join(CLASSIFIER_HEADS)}); use strategy full"
        )
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None:
        raise BadInputError(f"model: {type(base).__name__} has no output embeddings (LM head)")
    for name, module in base.named_modules():
        if module is head:
            return name, head
    raise BadInputError(f"model: the LM head of {type(base).__name__} is not a submodule")


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of transformer blocks, found by shape rather than by model class.

    The largest ``nn.ModuleList`` named like a block list (``layer``, ``layers``, ``h``,
    ``block``) wins; failing that, the largest ModuleList at all.
    """
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, module in base_of(model).named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        named = 1 if name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES else 0
        size = sum(_numel(p) for p in module.parameters())
        key = (named, size, name, module)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        raise BadInputError("strategy partial: this model has no list of transformer blocks; use partial.modules")
    return best[2], best[3]


def untie_head(model: nn.Module, task: Task) -> None:
    """Give a causal LM its own head weight, so training it leaves the input embeddings frozen."""
    if task != Task.CAUSAL_LM:
        return
    base = base_of(model)
    head = base.get_output_embeddings()
    emb = base.get_input_embeddings()
    if head is not None and emb is not None and head.weight is emb.weight:
        head.weight = nn.Parameter(emb.weight.detach().clone())
        base.config.tie_word_embeddings = False
        text_config = getattr(base.config, "get_text_config", None)
        if callable(text_config):
            text_config().tie_word_embeddings = False


def resolve_auto(cfg: TrainerConfig, train_examples: int, model: nn.Module) -> tuple[StrategySpec, str]:
    """Pick a concrete strategy for ``auto``, with the reason shown in status.

    Rules, in order:
    1. fewer than ``AUTO_SMALL_DATA`` examples: ``head-only`` for classification (the frozen
       backbone's features are the best use of little data), ``lora`` for causal-lm (an LM
       head alone cannot learn a new distribution);
    2. at least ``AUTO_LARGE_DATA`` examples, no budget set and under ``AUTO_LARGE_MODEL``
       parameters: ``full``;
    3. otherwise ``lora`` when the model is large (memory is what limits), else ``partial``
       on the top third of the blocks.
    """
    total_params = count_params(model)[1]
    lora = cfg.strategy.lora or LoraSpec()
    has_budget = cfg.budget.max_cost is not None or cfg.budget.max_gpu_hours is not None
    if train_examples < AUTO_SMALL_DATA:
        if cfg.task == Task.SEQUENCE_CLASSIFICATION:
            return StrategySpec(type=StrategyType.HEAD_ONLY), (
                f"{train_examples} training examples < {AUTO_SMALL_DATA}: head-only on frozen features"
            )
        return StrategySpec(type=StrategyType.LORA, lora=lora), (
            f"{train_examples} training examples < {AUTO_SMALL_DATA} for causal-lm: lora"
        )
    if train_examples >= AUTO_LARGE_DATA and not has_budget and total_params < AUTO_LARGE_MODEL:
        return StrategySpec(type=StrategyType.FULL), (
            f"{train_examples} examples >= {AUTO_LARGE_DATA}, no budget, {total_params} params: full"
        )
    if total_params >= AUTO_LARGE_MODEL or cfg.task == Task.CAUSAL_LM:
        return StrategySpec(type=StrategyType.LORA, lora=lora), (
            f"{train_examples} examples, {total_params} params: lora keeps memory and cost low"
        )
    partial = cfg.strategy.partial
    if partial is None or (partial.trainable_layers is None and not partial.modules):
        _, blocks = find_blocks(model)
        partial = PartialSpec(trainable_layers=max(1, len(blocks) // AUTO_PARTIAL_FRACTION))
    why = "budget set" if has_budget else f"< {AUTO_LARGE_DATA} examples"
    return StrategySpec(type=StrategyType.PARTIAL, partial=partial), (
        f"{train_examples} examples ({why}): partial on the top {partial.trainable_layers or 0} blocks"
        + (f" and modules {partial.modules}" if partial.modules else "")
    )


@dataclass(frozen=True)
class AutoDecision:
    """What the measured ``auto`` chose, and every figure it chose by (status and result)."""

    spec: StrategySpec
    reason: str
    record: dict[str, Any]


def decide_auto(
    cfg: TrainerConfig,
    probe: ProbeResult,
    workload: Workload,
    hardware: Hardware,
    *,
    num_labels: int,
    hidden: int,
) -> AutoDecision:
    """The measured ``auto`` for classification: probe first, escalate only with room and budget.

    1. The probe (the converged head on frozen features, already fitted) measures how well
       the pretrained features serve the task. A validation accuracy of at least
       ``AUTO_PROBE_GOOD_ENOUGH`` leaves no room: ``head-only``.
    2. Fewer than ``AUTO_MIN_PER_CLASS`` training examples per class: fine-tuning would
       mostly fit noise (and the probe's head is the better estimate): ``head-only``.
    3. Otherwise escalate, cheapest sufficient first: ``partial`` on the top third of the
       blocks (``lora`` for models of ``AUTO_LARGE_MODEL`` parameters and more, where memory
       limits), and ``full`` only from ``AUTO_FULL_PER_CLASS`` examples per class on. Each
       candidate's cost is projected with ``planning.estimate`` at the throughput the probe
       measured; one over ``spec.budget`` is rejected with its figures and the next cheaper
       one is tried; ``head-only`` is the fallback.
    """
    from kadapt_trainer import planning

    total = workload.total_params
    per_class = workload.train_examples / max(1, num_labels)
    partial = cfg.strategy.partial
    if partial is None or (partial.trainable_layers is None and not partial.modules):
        partial = PartialSpec(trainable_layers=max(1, workload.layers // AUTO_PARTIAL_FRACTION))
    lora = cfg.strategy.lora or LoraSpec()
    specs = {
        StrategyType.HEAD_ONLY: StrategySpec(type=StrategyType.HEAD_ONLY),
        StrategyType.PARTIAL: StrategySpec(type=StrategyType.PARTIAL, partial=partial),
        StrategyType.LORA: StrategySpec(type=StrategyType.LORA, lora=lora),
        StrategyType.FULL: StrategySpec(type=StrategyType.FULL),
    }
    estimates: dict[StrategyType, Estimate] = {
        s: planning.estimate(
            s,
            workload,
            hardware,
            cfg.training,
            cfg.task,
            trainable_layers=partial.trainable_layers or 1,
            num_labels=num_labels,
            hidden=hidden,
            lora_rank=lora.rank,
            max_cost=cfg.budget.max_cost,
            max_gpu_hours=cfg.budget.max_gpu_hours,
        )
        for s in specs
    }
    val_acc = probe.val_accuracy
    rejected: list[dict[str, str]] = []
    wanted: list[StrategyType] = []
    if val_acc is None:
        why = "no validation data to measure the probe on"
    elif val_acc >= AUTO_PROBE_GOOD_ENOUGH:
        why = f"probe validation accuracy {val_acc:.3f} >= {AUTO_PROBE_GOOD_ENOUGH}: the frozen features suffice"
    elif per_class < AUTO_MIN_PER_CLASS:
        why = (
            f"{per_class:.0f} training examples per class < {AUTO_MIN_PER_CLASS}: too few to fine-tune "
            f"beyond the probe (validation accuracy {val_acc:.3f})"
        )
    else:
        why = f"probe validation accuracy {val_acc:.3f} leaves room; {per_class:.0f} examples per class"
        big = total >= AUTO_LARGE_MODEL
        if per_class >= AUTO_FULL_PER_CLASS and not big:
            wanted.append(StrategyType.FULL)
        wanted.extend([StrategyType.LORA, StrategyType.PARTIAL] if big else [StrategyType.PARTIAL, StrategyType.LORA])
    for strategy in (StrategyType.FULL, StrategyType.PARTIAL, StrategyType.LORA):
        if strategy not in wanted:  # with escalation wanted, only full can be left out: say which rule
            reason = why if not wanted else _why_not_full(total, per_class, estimates)
            rejected.append({"strategy": str(strategy), "reason": reason})
    chosen = StrategyType.HEAD_ONLY
    for strategy in wanted:
        est = estimates[strategy]
        if chosen != StrategyType.HEAD_ONLY:
            rejected.append({"strategy": str(strategy), "reason": f"not needed: {chosen} fits and comes first"})
        elif est.fits_budget:
            chosen = strategy
        else:
            rejected.append({"strategy": str(strategy), "reason": est.budget_reason or "over budget"})
    rejected = [r for r in rejected if r["strategy"] != str(chosen)]
    est = estimates[chosen]
    if chosen == StrategyType.HEAD_ONLY:
        reason = (
            f"{why}: head-only (the probe's converged head)"
            if not wanted
            else (f"{why}, but every escalation is over budget: head-only (the probe's converged head)")
        )
    else:
        what = f"partial on the top {partial.trainable_layers} blocks" if chosen == StrategyType.PARTIAL else chosen
        reason = (
            f"{why}: {what} from the probe's head, projected {est.seconds:.0f}s, "
            f"{est.cost:.4g} {hardware.currency} (full: {estimates[StrategyType.FULL].cost:.4g})"
        )
    record: dict[str, Any] = {
        "chosen": str(chosen),
        "probe": {
            "val_accuracy": val_acc,
            "train_accuracy": probe.train_accuracy,
            "gap": probe.gap,
            "c": probe.c,
        },
        "train_examples": workload.train_examples,
        "examples_per_class": round(per_class, 1),
        "total_params": total,
        "budget": {"max_cost": cfg.budget.max_cost, "max_gpu_hours": cfg.budget.max_gpu_hours},
        "throughput": {"flops_per_second": hardware.flops_per_second, "source": hardware.source},
        "candidates": [
            {
                "strategy": e.strategy,
                "projected_seconds": round(e.seconds, 3),
                "projected_gpu_hours": round(e.gpu_seconds / 3600.0, 6),
                "projected_cost": round(e.cost, 6),
                "fits_budget": e.fits_budget,
            }
            for e in estimates.values()
        ],
        "rejected": rejected,
    }
    return AutoDecision(specs[chosen], reason, record)


def _why_not_full(total: int, per_class: float, estimates: dict[StrategyType, Estimate]) -> str:
    """Why an escalating ``auto`` leaves full fine-tuning out, with the rule's figures."""
    if total >= AUTO_LARGE_MODEL:
        return f"{total} parameters >= {AUTO_LARGE_MODEL}: full fine-tuning's memory; LoRA trains a fraction"
    full, partial = estimates[StrategyType.FULL].cost, estimates[StrategyType.PARTIAL].cost
    return (
        f"{per_class:.0f} examples per class < {AUTO_FULL_PER_CLASS}: full only from there on "
        f"(projected cost {full:.4g}, {full / partial:.1f}x partial's)"
        if partial > 0
        else f"{per_class:.0f} examples per class < {AUTO_FULL_PER_CLASS}: full only from there on"
    )


def lora_targets(model: nn.Module, spec: LoraSpec) -> list[str]:
    """The configured targets, else the defaults of the architecture."""
    if spec.target_modules:
        return list(spec.target_modules)
    model_type = getattr(base_of(model).config, "model_type", "")
    if model_type in DEFAULT_LORA_TARGETS:
        return DEFAULT_LORA_TARGETS[model_type]
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_map

        if model_type in peft_map:
            return list(peft_map[model_type])
    except ImportError:
        pass
    raise BadInputError(
        f"strategy.lora.targetModules: no default for model type {model_type!r}; "
        "list the attention projection names, e.g. [q_proj, v_proj]"
    )


def apply_strategy(
    model: nn.Module, spec: StrategySpec, task: Task, reason: str | None = None
) -> tuple[nn.Module, AppliedStrategy]:
    """Freeze what must not train and return the (possibly PEFT-wrapped) model with its counts."""
    strategy = StrategyType(spec.type)
    if strategy == StrategyType.AUTO:
        raise ValueError("resolve auto with resolve_auto before applying it")
    if strategy == StrategyType.LORA:
        return _apply_lora(model, spec.lora or LoraSpec(), task, reason)
    head_names: list[str] = []
    if strategy == StrategyType.FULL:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        untie_head(model, task)
        for p in model.parameters():
            p.requires_grad_(False)
        head_name, head = find_head(model, task)
        head_names.append(head_name)
        for p in head.parameters():
            p.requires_grad_(True)
        if strategy == StrategyType.PARTIAL:
            partial = spec.partial or PartialSpec()
            if partial.trainable_layers is not None:
                blocks_name, blocks = find_blocks(model)
                n = partial.trainable_layers
                if n > len(blocks):
                    raise BadInputError(
                        f"strategy.partial.trainableLayers is {n} but the model has {len(blocks)} blocks "
                        f"({blocks_name}); use at most {len(blocks)} or strategy full"
                    )
                for block in list(blocks)[len(blocks) - n :]:
                    for p in block.parameters():
                        p.requires_grad_(True)
            if partial.modules:
                matched = [
                    name for name, _ in base_of(model).named_modules() if any(m in name for m in partial.modules)
                ]
                if not matched:
                    raise BadInputError(
                        f"strategy.partial.modules {partial.modules} match no module of {type(model).__name__}"
                    )
                for name, module in base_of(model).named_modules():
                    if name in matched:
                        for p in module.parameters():
                            p.requires_grad_(True)
    trainable, total = count_params(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return model, AppliedStrategy(strategy, reason, trainable, total, head_names, names)


def _apply_lora(model: nn.Module, spec: LoraSpec, task: Task, reason: str | None) -> tuple[nn.Module, AppliedStrategy]:
    """Wrap in PEFT LoRA; a new classification head trains beside the adapters."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = lora_targets(model, spec)
    head_names: list[str] = []
    modules_to_save: list[str] | None = None
    if task == Task.SEQUENCE_CLASSIFICATION:
        head_name, _ = find_head(model, task)
        head_names = [head_name]
        modules_to_save = [head_name]
    model_type = getattr(base_of(model).config, "model_type", "")
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == Task.SEQUENCE_CLASSIFICATION else TaskType.CAUSAL_LM,
        r=spec.rank,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=spec.dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        fan_in_fan_out=model_type == "gpt2",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise BadInputError(f"strategy.lora.targetModules {targets}: {str(exc).splitlines()[0]}") from exc
    trainable, total = count_params(peft_model)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    return peft_model, AppliedStrategy(StrategyType.LORA, reason, trainable, total, head_names, names)
