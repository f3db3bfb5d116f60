"""The AdaptationJob API (``kadapt.dev/v1alpha1``): the one source of the CRD.

The training parts come from the trainer's config model (``kadapt_trainer.config``); this
module adds what only the platform cares about: resources, image, budget, run policy,
queue, and the status the operator writes. ``kadapt crd`` turns these models into the CRD.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kadapt_trainer.config import (
    API_GROUP,
    API_VERSION,
    KIND,
    BudgetSpec,
    CheckpointSpec,
    DatasetSpec,
    DeepSpeedSpec,
    ModelSpec,
    OutputSpec,
    SpecModel,
    StrategySpec,
    Task,
    TrainingSpec,
    cel,
)

PLURAL = "adaptationjobs"
SINGULAR = "adaptationjob"
SHORT_NAME = "aj"
CATEGORY = "kadapt"
API_VERSION_FULL = f"{API_GROUP}/{API_VERSION}"

IMMUTABLE = cel("self == oldSelf", "is immutable once the job exists; create a new AdaptationJob instead")

#: Spec fields that may change after creation (everything else carries IMMUTABLE).
MUTABLE_SPEC_FIELDS = frozenset({"budget", "runPolicy"})


class Toleration(SpecModel):
    """A Kubernetes toleration (the subset training pods need)."""

    key: str | None = Field(default=None, description="Taint key to tolerate.")
    operator: Annotated[str, Field(pattern="^(Exists|Equal)$")] = "Equal"
    value: str | None = None
    effect: Annotated[str, Field(pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")] | None = None
    toleration_seconds: int | None = None


class ResourcesSpec(SpecModel):
    """How many workers and what each gets."""

    workers: int = Field(default=1, ge=1, le=1024, description="Pods in the gang (torchrun nnodes).")
    gpus_per_worker: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per pod; 0 trains on CPU.")
    gpu_type: str = Field(
        default="default", min_length=1, max_length=63, description="Key into the operator's price table."
    )
    cpu: str = Field(default="4", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request per pod.")
    memory: str = Field(
        default="16Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$", description="Memory per pod."
    )
    shm_size: str = Field(default="2Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$", description="/dev/shm size.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pods run only on nodes with these labels.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate (GPU nodes).")
    priority_class_name: str | None = Field(
        default=None, min_length=1, description="PriorityClass of the pods (preemption order)."
    )


class RunPolicySpec(SpecModel):
    """Lifecycle: suspension, restarts, deadlines, clean-up."""

    suspend: bool = Field(default=False, description="true stops the pods (checkpoint kept); false resumes.")
    backoff_limit: int = Field(default=3, ge=0, le=100, description="Gang restarts after worker failures.")
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Fail the job after this much running time, counted from its first running pod; "
        "time suspended or queued (a Kueue preemption) after that does not count, restarts do.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Remove the finished job's Job, pods, ConfigMap and Service after this long; the "
        "AdaptationJob stays, as the record of the run that Argo CD or Flux would otherwise re-create.",
    )


def _immutable(**kw: Any) -> Any:
    return Field(json_schema_extra={"x-kubernetes-validations": [IMMUTABLE]}, **kw)


class AdaptationJobSpec(SpecModel):
    """What to adapt, how, with what, and within which limits."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(self.task == 'causal-lm' && self.strategy.type == 'head-only')",
                    "strategy head-only needs a classification head; use lora or partial for causal-lm",
                ),
            ]
        }
    )

    model: ModelSpec = _immutable()
    task: Task = _immutable(default=Task.SEQUENCE_CLASSIFICATION, description="What the adapted model does.")
    dataset: DatasetSpec = _immutable()
    strategy: StrategySpec = _immutable(default_factory=StrategySpec)
    training: TrainingSpec = _immutable(default_factory=TrainingSpec)
    deepspeed: DeepSpeedSpec = _immutable(default_factory=DeepSpeedSpec)
    resources: ResourcesSpec = _immutable(default_factory=ResourcesSpec)
    image: str | None = _immutable(default=None, min_length=1, description="Default: the operator's trainer image.")
    output: OutputSpec = _immutable()
    checkpoint: CheckpointSpec = _immutable(default_factory=CheckpointSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    run_policy: RunPolicySpec = Field(default_factory=RunPolicySpec)
    queue_name: str | None = _immutable(
        default=None, min_length=1, max_length=63, description="Kueue LocalQueue; copied to the Job's label."
    )

    @model_validator(mode="after")
    def _task_fits_strategy(self) -> AdaptationJobSpec:
        if self.task == Task.CAUSAL_LM and self.strategy.type == "head-only":
            raise ValueError(
                "strategy head-only needs a classification head; use lora or partial for causal-lm"
            )
        return self


# -- the status vocabulary (the cross-team contract): condition types and phases -------------
CREATED = "Created"
RUNNING = "Running"
SUSPENDED = "Suspended"
RESTARTING = "Restarting"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
BUDGET_EXCEEDED = "BudgetExceeded"
#: Kueue holds the Job suspended (waiting for admission, or preempted).
QUEUED = "Queued"
#: Set when a finished classification job is judged against always predicting the majority class.
BETTER_THAN_BASELINE = "BetterThanBaseline"
CONDITION_TYPES = (
    CREATED, QUEUED, RUNNING, SUSPENDED, RESTARTING, SUCCEEDED, FAILED, BUDGET_EXCEEDED, BETTER_THAN_BASELINE
)
PENDING = "Pending"
#: Every ``status.phase``, in the order of a job's life (the jobs-by-phase metric reports each).
PHASES = (PENDING, QUEUED, CREATED, RUNNING, SUSPENDED, RESTARTING, SUCCEEDED, FAILED)
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED})


class StatusModel(BaseModel):
    """Status objects: camelCase, tolerant of fields a newer operator wrote."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    type: str
    status: str = Field(pattern="^(True|False|Unknown)$")
    reason: str
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class ResolvedStrategy(StatusModel):
    resolved: str | None = None
    reason: str | None = None


class Progress(StatusModel):
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    percent: float = 0.0
    eta_seconds: float | None = None
    samples_per_second: float | None = None
    loss: float | None = None
    eval_metrics: dict[str, float] = Field(default_factory=dict)


class Parameters(StatusModel):
    trainable: int = 0
    total: int = 0
    percent: float = 0.0


class Cost(StatusModel):
    gpu_seconds: float = Field(default=0.0, alias="gpuSeconds")
    cost_so_far: float = 0.0
    projected_cost: float | None = None
    currency: str = "USD"
    price_per_gpu_hour: float = Field(default=0.0, alias="pricePerGPUHour")
    gpu_type: str | None = Field(default=None, alias="gpuType")
    #: Per pod, the time up to which its GPU seconds are already counted (the cost ledger):
    #: what makes accounting survive operator restarts and missed polls without double counting.
    accounted_until: dict[str, str] = Field(default_factory=dict)


class OutputStatus(StatusModel):
    uri: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class AdaptationJobStatus(StatusModel):
    phase: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    strategy: ResolvedStrategy = Field(default_factory=ResolvedStrategy)
    progress: Progress = Field(default_factory=Progress)
    parameters: Parameters = Field(default_factory=Parameters)
    cost: Cost = Field(default_factory=Cost)
    restarts: int = 0
    disruptions: int = 0
    last_checkpoint: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    output: OutputStatus = Field(default_factory=OutputStatus)


class ObjectMeta(BaseModel):
    """The metadata fields kadapt reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AdaptationJob(BaseModel):
    """A whole AdaptationJob object as stored by the API server."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: str = Field(alias="apiVersion", pattern=f"^{API_VERSION_FULL}$")
    kind: str = Field(pattern=f"^{KIND}$")
    metadata: ObjectMeta
    spec: AdaptationJobSpec
    status: AdaptationJobStatus | None = None
