"""The trainer's configuration model: pure pydantic, no torch.

This module is the one source for the training-related parts of the AdaptationJob API.
The operator imports it (and nothing else from the trainer) to build the CRD, validate
specs and render the resolved ``TrainerConfig`` into a ConfigMap; the trainer reads that
same JSON back. Field names are camelCase on the wire and snake_case in Python.

Cross-field rules live twice on purpose, and a test proves they agree: as CEL
(``x-kubernetes-validations``, enforced by the API server at admission) and as pydantic
validators (enforced by ``kadapt validate``, the operator and the local runner).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

API_GROUP = "kadapt.dev"
API_VERSION = "v1alpha1"
KIND = "AdaptationJob"

#: Where pods mount ``pvc://claim/...`` volumes; the local runner points it at its run folder.
PVC_ROOT_ENV = "KADAPT_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/kadapt/pvc"
#: Rank 0's HTTP port for ``/progress`` and ``/metrics``.
DEFAULT_PROGRESS_PORT = 9090

URI_SCHEMES = ("file://", "pvc://", "hf://", "pkg://")


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL rule for ``x-kubernetes-validations``."""
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class SpecModel(BaseModel):
    """Base of every spec object: frozen, camelCase aliases, unknown fields forbidden."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
        use_enum_values=True,
    )


class Task(StrEnum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    CAUSAL_LM = "causal-lm"


class StrategyType(StrEnum):
    HEAD_ONLY = "head-only"
    PARTIAL = "partial"
    FULL = "full"
    LORA = "lora"
    AUTO = "auto"


class DatasetFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"
    HF_DISK = "hf-disk"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


UriStr = Annotated[
    str,
    Field(
        min_length=1,
        pattern=r"^(file://|pvc://|hf://|pkg://|/|\./|[A-Za-z0-9_.-])",
        description="file:///abs/path, a plain path, pvc://claim/path, hf://org/name or pkg://python_package/path",
    ),
]


class ModelSpec(SpecModel):
    """The pretrained model to adapt."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.revision) || self.uri.startsWith('hf://')",
                    "model.revision applies only to hf:// models; remove it or use an hf:// uri",
                ),
                cel(
                    "!has(self.secretRef) || self.uri.startsWith('hf://')",
                    "model.secretRef applies only to hf:// models; remove it or use an hf:// uri",
                ),
            ]
        }
    )

    uri: UriStr = Field(description="Where the pretrained model lives.")
    revision: str | None = Field(default=None, min_length=1, description="hf:// only: branch, tag or commit.")
    secret_ref: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="hf:// only: a Secret in the job's namespace with key HF_TOKEN.",
    )

    @model_validator(mode="after")
    def _hf_only_fields(self) -> ModelSpec:
        if not self.uri.startswith("hf://"):
            if self.revision is not None:
                raise ValueError("model.revision applies only to hf:// models; remove it or use an hf:// uri")
            if self.secret_ref is not None:
                raise ValueError("model.secretRef applies only to hf:// models; remove it or use an hf:// uri")
        return self


class DatasetSpec(SpecModel):
    """The team's own data."""

    uri: UriStr = Field(description="A jsonl/csv/parquet file or a saved HF dataset directory.")
    format: DatasetFormat | None = Field(default=None, description="Inferred from the file extension when omitted.")
    text_field: str = Field(default="text", min_length=1, description="Column holding the input text.")
    label_field: str = Field(
        default="label", min_length=1, description="Column holding the class (classification only)."
    )
    validation_uri: UriStr | None = Field(
        default=None, description="A separate validation file; otherwise validationSplit is used."
    )
    validation_split: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Share of the data held out for validation."
    )
    test_uri: UriStr | None = Field(
        default=None,
        description="A held-out test file: the final model is also evaluated on it (report in the result).",
    )
    max_length: int = Field(default=128, ge=8, le=32768, description="Tokens per example after truncation.")


class PartialSpec(SpecModel):
    """Which parts train under the `partial` strategy (the head always trains)."""

    trainable_layers: int | None = Field(default=None, ge=1, description="The top N transformer blocks.")
    modules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Module names (substring match) that also train."
    )


class LoraSpec(SpecModel):
    """PEFT LoRA settings."""

    rank: int = Field(default=8, ge=1, le=1024, description="Rank r of the low-rank update.")
    alpha: float = Field(default=16.0, gt=0, description="Scaling: the update is multiplied by alpha / rank.")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Empty: sensible defaults for the architecture."
    )


class StrategySpec(SpecModel):
    """How to adapt: head-only, partial, full, lora or auto."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.type != 'partial' || (has(self.partial) && (has(self.partial.trainableLayers)"
                    " || (has(self.partial.modules) && size(self.partial.modules) > 0)))",
                    "strategy partial needs partial.trainableLayers or partial.modules",
                ),
                cel(
                    "!has(self.lora) || self.type == 'lora' || self.type == 'auto'",
                    "strategy.lora is only allowed with type lora or auto; remove it or set type: lora",
                ),
                cel(
                    "!has(self.partial) || self.type == 'partial' || self.type == 'auto'",
                    "strategy.partial is only allowed with type partial or auto; remove it or set type: partial",
                ),
            ]
        }
    )

    type: StrategyType = Field(default=StrategyType.AUTO, description="The adaptation strategy.")
    partial: PartialSpec | None = None
    lora: LoraSpec | None = None

    @model_validator(mode="after")
    def _settings_match_type(self) -> StrategySpec:
        t = self.type
        if t == StrategyType.PARTIAL and (
            self.partial is None or (self.partial.trainable_layers is None and not self.partial.modules)
        ):
            raise ValueError(
                "strategy partial needs partial.trainableLayers or partial.modules, e.g. partial: {trainableLayers: 2}"
            )
        if self.lora is not None and t not in (StrategyType.LORA, StrategyType.AUTO):
            raise ValueError(
                f"strategy.lora is only allowed with type lora or auto (type is {t}); remove it or set type: lora"
            )
        if self.partial is not None and t not in (StrategyType.PARTIAL, StrategyType.AUTO):
            raise ValueError(
                f"strategy.partial is only allowed with type partial or auto (type is {t}); "
                "remove it or set type: partial"
            )
        return self


class EarlyStoppingSpec(SpecModel):
    """Stop when the validation metric stops improving (on by default against overfitting)."""

    enabled: bool = Field(default=True, description="Stop when the validation metric stops improving.")
    patience: int = Field(default=2, ge=1, description="Evaluations without improvement before stopping.")
    metric: Literal["eval_loss", "accuracy"] = Field(default="eval_loss", description="Watched metric.")


#: What a TrainingSpec whose strategy defaults are not filled in yet trains with (the trainer
#: fills them per strategy, see ``kadapt_trainer.defaults``; these keep direct callers working).
UNRESOLVED_EPOCHS = 3
UNRESOLVED_LEARNING_RATE = 5e-5
UNRESOLVED_WARMUP_RATIO = 0.06


class TrainingSpec(SpecModel):
    """Optimisation settings. Unset rates, epochs and warm-up take the resolved strategy's defaults."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.globalBatchSize % self.microBatchSize == 0",
                    "training.globalBatchSize must be a multiple of training.microBatchSize",
                ),
            ]
        }
    )

    epochs: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Passes over the training data. Default by strategy: 3 for partial, 5 for full and lora; for head-only "
            "classification the head is solved to convergence on cached features and epochs caps the L-BFGS "
            "iterations per L2 candidate (default 100)."
        ),
    )
    max_steps: int | None = Field(default=None, ge=1, description="Caps optimizer steps; overrides epochs.")
    global_batch_size: int = Field(default=32, ge=1, le=65536, description="Examples per optimizer step, all ranks.")
    micro_batch_size: int = Field(default=8, ge=1, le=4096, description="Examples per forward pass per rank.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1.0,
        description="Peak learning rate of the backbone. Default by strategy: lora 3e-4, partial 1e-4, full 5e-5.",
    )
    head_learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=10.0,
        description="Learning rate of the new head; default 20x learningRate (set or the strategy's).",
    )
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Share of steps with linear warm-up. Default by strategy: 0.1 partial/full, 0.06 lora.",
    )
    lp_ft: bool = Field(
        default=True,
        description=(
            "LP-FT: before partial, full or lora fine-tuning of a classifier, fit the new head to convergence "
            "on the frozen features (a linear probe) and start from it. false: start from a random head."
        ),
    )
    precision: Precision = Field(default=Precision.FP32, description="fp32 on CPU; bf16 on Ampere and newer.")
    seed: int = Field(default=42, ge=0, description="Seeds data order, initialisation and dropout.")
    eval_every_steps: int | None = Field(default=None, ge=1, description="Default: once per epoch.")
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)

    def resolved_epochs(self) -> int:
        """``epochs``, or the generic default before the strategy's own is filled in."""
        return self.epochs if self.epochs is not None else UNRESOLVED_EPOCHS

    def resolved_learning_rate(self) -> float:
        """``learningRate``, or the generic default before the strategy's own is filled in."""
        return self.learning_rate if self.learning_rate is not None else UNRESOLVED_LEARNING_RATE

    def resolved_warmup_ratio(self) -> float:
        """``warmupRatio``, or the generic default before the strategy's own is filled in."""
        return self.warmup_ratio if self.warmup_ratio is not None else UNRESOLVED_WARMUP_RATIO

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingSpec:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"training.globalBatchSize ({self.global_batch_size}) must be a multiple of "
                f"training.microBatchSize ({self.micro_batch_size})"
            )
        return self


class DeepSpeedSpec(SpecModel):
    """DeepSpeed engine settings; `overrides` are merged last into the generated config."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.offloadParams || self.zeroStage == 3",
                    "deepspeed.offloadParams needs zeroStage 3",
                ),
                cel(
                    "!self.offloadOptimizer || self.zeroStage >= 1",
                    "deepspeed.offloadOptimizer needs zeroStage 1, 2 or 3",
                ),
            ]
        }
    )

    zero_stage: int = Field(default=0, ge=0, le=3, description="ZeRO: 0 off, 1 optimizer, 2 +gradients, 3 +parameters.")
    offload_optimizer: bool = Field(default=False, description="Optimizer state in CPU memory (ZeRO 1-3).")
    offload_params: bool = Field(default=False, description="Parameters in CPU memory (ZeRO 3).")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw DeepSpeed config keys merged last (expert use).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> DeepSpeedSpec:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("deepspeed.offloadParams needs zeroStage 3")
        if self.offload_optimizer and self.zero_stage < 1:
            raise ValueError("deepspeed.offloadOptimizer needs zeroStage 1, 2 or 3")
        return self


class OutputSpec(SpecModel):
    """Where the adapted model (or LoRA adapter) goes."""

    uri: UriStr = Field(description="pvc://claim/path, file:///path or a plain path.")
    merge_adapter: bool = Field(default=False, description="LoRA: also save the adapter merged into the base.")


class CheckpointSpec(SpecModel):
    """Periodic, atomic checkpoints; a restarted gang resumes from the newest complete one."""

    every_steps: int | None = Field(default=None, ge=1, description="Default: once per epoch.")
    every_minutes: float | None = Field(default=None, gt=0, description="Also checkpoint on a wall-clock interval.")
    keep: int = Field(default=2, ge=1, le=100, description="Complete checkpoints kept; older ones are deleted.")
    uri: UriStr | None = Field(default=None, description="Default: <output.uri>/checkpoints.")


class BudgetSpec(SpecModel):
    """Spending limits: past either one the job is suspended, its checkpoint kept."""

    max_cost: float | None = Field(default=None, gt=0, description="In the operator's currency.")
    max_gpu_hours: float | None = Field(
        default=None, gt=0, alias="maxGPUHours", description="GPU-hours, summed over pods (running time x GPUs)."
    )


class TrainerConfig(SpecModel):
    """The fully resolved config a trainer process reads (the ConfigMap's ``trainer.json``)."""

    job_name: str = Field(default="local", min_length=1)
    namespace: str = Field(default="default", min_length=1)
    model: ModelSpec
    task: Task = Task.SEQUENCE_CLASSIFICATION
    dataset: DatasetSpec
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    output: OutputSpec
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    progress_port: int = Field(default=DEFAULT_PROGRESS_PORT, ge=1, le=65535)
    gpus_per_process: int = Field(default=0, ge=0, description="For the cost figure: GPUs one rank holds.")
    price_per_gpu_hour: float = Field(default=0.0, ge=0)
    currency: str = "USD"

    def checkpoint_uri(self) -> str:
        """Checkpoints default to a folder beside the output."""
        return self.checkpoint.uri or self.output.uri.rstrip("/") + "/checkpoints"


def resolve_uri(uri: str, env: dict[str, str] | None = None) -> Path:
    """Map a file/pvc/pkg URI to the local path a trainer process sees.

    ``pvc://claim/path`` is mounted at ``$KADAPT_PVC_ROOT/claim/path`` (``/mnt/kadapt/pvc`` in
    pods, a run folder locally). ``pkg://module/sub`` points into an installed Python package
    (how tests and the quickstart reach models shipped on PyPI). ``hf://`` has no local path.

    Raises:
        ValueError: for ``hf://`` URIs or a ``pkg://`` module that is not installed.
    """
    env = dict(os.environ) if env is None else env
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if uri.startswith("pvc://"):
        root = Path(env.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT))
        return root / uri[len("pvc://") :]
    if uri.startswith("pkg://"):
        import importlib.util

        module, _, sub = uri[len("pkg://") :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{uri}: Python package {module!r} is not installed; pip install it or use a path")
        base = Path(next(iter(spec.submodule_search_locations)))
        return base / sub if sub else base
    if uri.startswith("hf://"):
        raise ValueError(f"{uri}: hf:// models have no local path; load them through the hub client")
    return Path(uri)


def pvc_claim(uri: str) -> str | None:
    """The claim name of a ``pvc://claim/path`` URI, else None."""
    if not uri.startswith("pvc://"):
        return None
    return uri[len("pvc://") :].split("/", 1)[0]


#: Exit code of a trainer that checkpointed and stopped on SIGTERM/SIGINT (128 + SIGTERM).
#: The rendered Job's podFailurePolicy ignores it, so a preempted gang is not counted as failed.
EXIT_STOPPED = 143
#: Exit code for bad input found before training starts (config, data, model): no retry helps.
EXIT_BAD_INPUT = 2
#: File name of the final result (JSON) written into the output folder by rank 0.
RESULT_FILE = "kadapt-result.json"
#: Where the rendered ConfigMap is mounted in trainer pods.
CONFIG_DIR = "/etc/kadapt"
TRAINER_CONFIG_FILE = "trainer.json"
DEEPSPEED_CONFIG_FILE = "deepspeed.json"


class TrainingFigures(BaseModel):
    """Where training stands: the figures ``/progress``, the result file and the final summary share.

    One home for their names, types and defaults; snake_case on the wire.
    """

    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    eval_metrics: dict[str, float] = Field(default_factory=dict)


class ProgressReport(TrainingFigures):
    """What rank 0 serves at ``/progress`` (and writes, final, to ``RESULT_FILE``).

    The operator and the local runner parse it with this model; snake_case on the wire.
    """

    model_config = ConfigDict(extra="ignore")

    state: Literal["starting", "training", "evaluating", "saving", "succeeded", "failed", "stopped"] = "starting"
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    trainable_params: int = 0
    total_params: int = 0
    strategy: str | None = None
    strategy_reason: str | None = None
    last_checkpoint: str | None = None
    output_uri: str | None = None
    world_size: int = 1
    wall_seconds: float = 0.0
    message: str | None = None
    #: Rows left out of training/validation, by reason (empty_text, missing_label, no_tokens,
    #: no_target_tokens); see kadapt_trainer.data. Counted, never silent.
    dropped_rows: dict[str, int] = Field(default_factory=dict)
    #: Warnings about the input the run went on with (maxLength clamped, labels merged from forms).
    warnings: list[str] = Field(default_factory=list)
    #: The training settings used (strategy defaults filled in) and which came from defaults.
    training: dict[str, Any] | None = None
    #: The linear probe (head-only's fit, auto's probe, LP-FT's start): chosen L2, accuracies, path.
    probe: dict[str, Any] | None = None
    #: auto's decision: probe figures, each candidate's projected cost, the budget, rejections.
    strategy_decision: dict[str, Any] | None = None
    #: Final evaluation report per split ("validation", "test"): see kadapt_trainer.report.
    evaluation: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: False when the final validation accuracy is not above the majority-class baseline
    #: (the operator raises a Warning Event and condition); None when not applicable.
    better_than_baseline: bool | None = None
    #: The step the run resumed at from a checkpoint; None when it started fresh (never a guess).
    resumed_from_step: int | None = None
    #: The training curve, one point per evaluation: step, epoch, mean training loss since the
    #: previous point, and the evaluation's metrics (``kadapt run`` draws it as a PNG).
    curve: list[dict[str, float]] = Field(default_factory=list)


def gradient_accumulation(training: TrainingSpec, world_size: int) -> int:
    """Micro-steps per optimizer step so that micro x world x accumulation == global batch.

    Raises:
        ValueError: when the global batch size does not divide evenly.
    """
    per_step = training.micro_batch_size * world_size
    if training.global_batch_size % per_step:
        raise ValueError(
            f"training.globalBatchSize ({training.global_batch_size}) must be a multiple of "
            f"microBatchSize x world size ({training.micro_batch_size} x {world_size}); "
            f"use {max(per_step, training.global_batch_size // per_step * per_step)}"
        )
    return training.global_batch_size // per_step


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def deepspeed_config(cfg: TrainerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for this job at this world size; user overrides merged last.

    The optimizer and scheduler are built by the trainer (only trainable parameters, per-group
    learning rates), so they are not part of this config.
    """
    ds = cfg.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    out: dict[str, Any] = {
        "train_batch_size": cfg.training.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.training.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(cfg.training, world_size),
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.training.precision == Precision.BF16},
        "fp16": {"enabled": cfg.training.precision == Precision.FP16},
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
    return deep_merge(out, ds.overrides)
