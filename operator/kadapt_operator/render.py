"""AdaptationJob -> Kubernetes objects: a pure function, the same for the operator and the CLI.

``render(job, settings)`` builds the three children of a job (ConfigMap with the resolved
trainer and DeepSpeed configs, headless Service, Indexed batch/v1 Job running ``torchrun``)
as plain dicts, with no I/O and no clock, so that the same input always gives the same bytes:
the operator can compare what exists with what it would create, ``kadapt render`` prints
exactly what the operator applies, and the local runner executes the very same pod spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from kadapt_operator import labels
from kadapt_operator.api import AdaptationJob, AdaptationJobSpec
from kadapt_operator.k8s import COMPLETION_INDEX, DISRUPTION_TARGET, GPU_RESOURCE, TRAINER_CONTAINER
from kadapt_operator.settings import OperatorSettings
from kadapt_operator.validation import SpecError, SpecInvalid, locations
from kadapt_trainer.config import (
    CONFIG_DIR,
    DEEPSPEED_CONFIG_FILE,
    DEFAULT_PVC_ROOT,
    EXIT_STOPPED,
    PVC_ROOT_ENV,
    TRAINER_CONFIG_FILE,
    TrainerConfig,
    deepspeed_config,
    pvc_claim,
)

#: The trainer container of every worker pod.
CONTAINER_NAME = TRAINER_CONTAINER
#: Where the trainer writes its one-line cause (Kubernetes' default path, set explicitly; the
#: trainer's ``kadapt_trainer.errors.TERMINATION_LOG`` is the same).
TERMINATION_LOG = "/dev/termination-log"
#: Rank 0's /progress and /metrics port name (the number is ``settings.progress_port``).
METRICS_PORT_NAME = "metrics"
#: torch.distributed rendezvous (TCPStore on pod 0).
RENDEZVOUS_PORT = 29500
RENDEZVOUS_PORT_NAME = "rendezvous"
#: The env var the completion index (:data:`kadapt_operator.k8s.COMPLETION_INDEX`) becomes.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
#: Key of the Hugging Face token in ``spec.model.secretRef``.
HF_TOKEN_KEY = "HF_TOKEN"

#: Volume names and mount points.
CONFIG_VOLUME = "config"
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"
HF_CACHE_VOLUME = "hf-cache"
HF_CACHE_PATH = "/var/cache/huggingface"
PVC_VOLUME_PREFIX = "pvc-"
PVC_MOUNT_ROOT = DEFAULT_PVC_ROOT

#: The restricted Pod Security Standard's user (any non-root uid works; the image uses 1000).
RUN_AS_USER = 1000
#: Time the trainer gets after SIGTERM to write its checkpoint.
TERMINATION_GRACE_SECONDS = 120


@dataclass(frozen=True)
class Rendered:
    """The children of one AdaptationJob, as plain dicts ready for the API server."""

    config_map: dict[str, Any]
    service: dict[str, Any]
    job: dict[str, Any]

    def objects(self) -> list[dict[str, Any]]:
        """Every child in apply order: what the pods need exists before the Job creates them."""
        return [self.config_map, self.service, self.job]


@dataclass(frozen=True)
class PvcMount:
    """One distinct PersistentVolumeClaim the pods mount."""

    claim: str
    volume: str
    read_only: bool

    @property
    def mount_path(self) -> str:
        return f"{PVC_MOUNT_ROOT}/{self.claim}"


def world_size(job: AdaptationJob) -> int:
    """Trainer processes in the gang: workers x processes per worker (one per GPU, one on CPU)."""
    return job.spec.resources.workers * processes_per_worker(job)


def processes_per_worker(job: AdaptationJob) -> int:
    """torchrun's ``--nproc-per-node``: one per GPU, or one CPU process."""
    return max(job.spec.resources.gpus_per_worker, 1)


def queue_name(job: AdaptationJob, settings: OperatorSettings) -> str | None:
    """The Kueue LocalQueue of the job: its own, else the operator's default."""
    return job.spec.queue_name or settings.default_queue_name


#: The training half of the spec: the fields the trainer config shares with the AdaptationJob spec
#: (model, task, dataset, strategy, training, deepspeed, output, checkpoint, budget), passed on as
#: they are. A field added to both travels without another line here.
TRAINER_SPEC_FIELDS = tuple(name for name in TrainerConfig.model_fields if name in AdaptationJobSpec.model_fields)


def trainer_config(job: AdaptationJob, settings: OperatorSettings) -> TrainerConfig:
    """The fully resolved config the trainer reads (checkpoint location and price filled in)."""
    spec = job.spec
    res = spec.resources
    cfg = TrainerConfig(
        **{name: getattr(spec, name) for name in TRAINER_SPEC_FIELDS},
        job_name=job.metadata.name,
        namespace=job.metadata.namespace,
        progress_port=settings.progress_port,
        gpus_per_process=1 if res.gpus_per_worker > 0 else 0,
        price_per_gpu_hour=settings.price_for(res.gpu_type),
        currency=settings.currency,
    )
    checkpoint = spec.checkpoint.model_copy(update={"uri": cfg.checkpoint_uri()})
    return cfg.model_copy(update={"checkpoint": checkpoint})


def pvc_mounts(job: AdaptationJob) -> list[PvcMount]:
    """Each distinct claim once, sorted by name; read-only unless the trainer writes to it."""
    writes: dict[str, bool] = {}
    for _path, uri, written in locations(job):
        claim = pvc_claim(uri)
        if claim:
            writes[claim] = writes.get(claim, False) or written
    return [
        PvcMount(claim=claim, volume=f"{PVC_VOLUME_PREFIX}{i}", read_only=not writes[claim])
        for i, claim in enumerate(sorted(writes))
    ]


def cluster_warnings(job: AdaptationJob) -> list[SpecError]:
    """What renders fine but loses work on a cluster (the local runner maps paths to folders).

    A ``file://`` or plain-path output or checkpoint lands on the pod's read-only, ephemeral
    root filesystem; only ``pvc://`` outlives the pod.
    """
    warnings: dict[str, SpecError] = {}
    for path, uri, written in locations(job):
        if written and pvc_claim(uri) is None and path not in warnings:
            warnings[path] = SpecError(
                path, f"{uri} is inside the pod and lost when it ends; on a cluster use pvc://claim/path"
            )
    return list(warnings.values())


def _config_json(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def render_config_map(job: AdaptationJob, settings: OperatorSettings) -> dict[str, Any]:
    """ConfigMap with ``trainer.json`` (resolved TrainerConfig) and ``deepspeed.json``."""
    cfg = trainer_config(job, settings)
    try:
        ds = deepspeed_config(cfg, world_size(job))
    except ValueError as exc:
        raise SpecInvalid([SpecError("spec.training.globalBatchSize", str(exc))], job.metadata.name) from None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": labels.child_metadata(job, labels.COMPONENT_CONFIG, labels.config_map_name(job.metadata.name)),
        "data": {
            TRAINER_CONFIG_FILE: _config_json(cfg.model_dump(mode="json", by_alias=True)),
            DEEPSPEED_CONFIG_FILE: _config_json(ds),
        },
    }


def render_service(job: AdaptationJob, settings: OperatorSettings) -> dict[str, Any]:
    """Headless Service: stable DNS ``<job>-<i>.<job>`` for rendezvous, and the metrics port."""
    name = job.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": labels.child_metadata(job, labels.COMPONENT_SERVICE, labels.service_name(name)),
        "spec": {
            "clusterIP": "None",
            # Workers must resolve pod 0 before any pod is Ready.
            "publishNotReadyAddresses": True,
            "selector": labels.selector_labels(name),
            "ports": [
                {"name": METRICS_PORT_NAME, "port": settings.progress_port, "targetPort": METRICS_PORT_NAME},
                {"name": RENDEZVOUS_PORT_NAME, "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT_NAME},
            ],
        },
    }


#: torchrun behind the launcher that maps a signalled stop to exit code 143.
LAUNCHER = ("python", "-m", "kadapt_trainer.launch")


def torchrun_command(job: AdaptationJob) -> list[str]:
    """The worker's command: torchrun through kadapt's launcher; the kubelet expands ``$(VAR)``.

    The launcher (``kadapt_trainer.launch``) takes torchrun's arguments and keeps the trainer's
    exit code 143 when the pod is stopped (torchrun itself exits 1 on SIGTERM), so the Job's
    podFailurePolicy can tell a checkpointed stop from a crash.
    """
    name = job.metadata.name
    return [
        *LAUNCHER,
        "--nnodes",
        str(job.spec.resources.workers),
        "--nproc-per-node",
        str(processes_per_worker(job)),
        "--node-rank",
        f"$({COMPLETION_INDEX_ENV})",
        "--master-addr",
        labels.master_address(name),
        "--master-port",
        str(RENDEZVOUS_PORT),
        "-m",
        "kadapt_trainer",
        "--config",
        f"{CONFIG_DIR}/{TRAINER_CONFIG_FILE}",
    ]


def _env(job: AdaptationJob) -> list[dict[str, Any]]:
    model = job.spec.model
    env: list[dict[str, Any]] = [
        {
            "name": COMPLETION_INDEX_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        },
        {"name": PVC_ROOT_ENV, "value": PVC_MOUNT_ROOT},
        {"name": "HOME", "value": TMP_PATH},
        {"name": "HF_HOME", "value": HF_CACHE_PATH},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    if not model.uri.startswith("hf://"):
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if model.secret_ref:
        # A secretKeyRef can only name a Secret in the pod's own namespace: the job's.
        env.append(
            {
                "name": HF_TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": model.secret_ref, "key": HF_TOKEN_KEY}},
            }
        )
    return env


def _resources(job: AdaptationJob) -> dict[str, Any]:
    res = job.spec.resources
    amounts: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpus_per_worker > 0:
        amounts[GPU_RESOURCE] = str(res.gpus_per_worker)
    # requests == limits: Guaranteed QoS, the last to be evicted under node pressure.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _volumes(job: AdaptationJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pod volumes and the trainer's mounts."""
    name = job.metadata.name
    volumes: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "configMap": {"name": labels.config_map_name(name)}},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": job.spec.resources.shm_size}},
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": HF_CACHE_VOLUME, "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": SHM_VOLUME, "mountPath": SHM_PATH},
        {"name": TMP_VOLUME, "mountPath": TMP_PATH},
        {"name": HF_CACHE_VOLUME, "mountPath": HF_CACHE_PATH},
    ]
    for pvc in pvc_mounts(job):
        volumes.append(
            {"name": pvc.volume, "persistentVolumeClaim": {"claimName": pvc.claim, "readOnly": pvc.read_only}}
        )
        mounts.append({"name": pvc.volume, "mountPath": pvc.mount_path, "readOnly": pvc.read_only})
    return volumes, mounts


def _pod_spec(job: AdaptationJob, settings: OperatorSettings) -> dict[str, Any]:
    res = job.spec.resources
    volumes, mounts = _volumes(job)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": job.spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": torchrun_command(job),
        "env": _env(job),
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": settings.progress_port, "protocol": "TCP"},
            {"name": RENDEZVOUS_PORT_NAME, "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(job),
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The trainer writes its one-line cause here on bad input (exit 2); with nothing written
        # the kubelet falls back to the log's tail. The operator reads it from
        # containerStatuses[].state.terminated.message (runtime/termination.py).
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": labels.service_name(job.metadata.name),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if res.node_selector:
        spec["nodeSelector"] = dict(sorted(res.node_selector.items()))
    if res.tolerations:
        spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in res.tolerations]
    if res.priority_class_name:
        spec["priorityClassName"] = res.priority_class_name
    return spec


def pod_failure_policy() -> dict[str, Any]:
    """Disruptions and a checkpointed stop (exit 143) are ignored; any other failure fails the Job.

    The Job itself never retries (backoffLimit 0): the operator restarts the whole gang from
    its checkpoint and counts it, because one replaced pod cannot rejoin a torchrun gang.
    """
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": DISRUPTION_TARGET, "status": "True"}]},
            {
                "action": "Ignore",
                "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": [EXIT_STOPPED]},
            },
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "NotIn", "values": [0, EXIT_STOPPED]},
            },
        ]
    }


def render_job(job: AdaptationJob, settings: OperatorSettings, *, suspend: bool | None = None) -> dict[str, Any]:
    """Indexed batch/v1 Job: one pod per worker, the unit Kueue, Volcano and quotas understand."""
    spec = job.spec
    name = job.metadata.name
    workers = spec.resources.workers
    metadata = labels.child_metadata(job, labels.COMPONENT_JOB, labels.batch_job_name(name))
    queue = queue_name(job, settings)
    if queue:
        metadata["labels"][labels.LABEL_QUEUE_NAME] = queue
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": workers,
        "parallelism": workers,
        "backoffLimit": 0,
        "podFailurePolicy": pod_failure_policy(),
        "suspend": spec.run_policy.suspend if suspend is None else suspend,
    }
    # No activeDeadlineSeconds on the Job: the Job controller would count it from the Job's start
    # (pods still pending included) and restart it at each resume. The operator enforces the
    # AdaptationJob's deadline itself, from the first running pod, without suspended or queued time.
    job_spec["template"] = {
        "metadata": {
            "labels": labels.child_labels(job, labels.COMPONENT_WORKER),
            "annotations": {"kubectl.kubernetes.io/default-container": CONTAINER_NAME},
        },
        "spec": _pod_spec(job, settings),
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def render(job: AdaptationJob, settings: OperatorSettings, *, suspend: bool | None = None) -> Rendered:
    """The children of ``job``; ``suspend`` overrides ``spec.runPolicy.suspend`` (budget stops).

    ``job`` comes from :func:`kadapt_operator.validation.validate_object`, which has already
    checked everything that would make the children invalid: rendering does not check again.
    """
    return Rendered(
        config_map=render_config_map(job, settings),
        service=render_service(job, settings),
        job=render_job(job, settings, suspend=suspend),
    )


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the JSON in the ConfigMap stays readable."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as multi-document YAML, keys in rendering order (deterministic)."""
    return yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, explicit_start=True, width=10_000
    )
