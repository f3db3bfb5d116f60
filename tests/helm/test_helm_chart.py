"""The Helm chart renders, lints and yields objects a real API server would accept."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from kadapt_operator import metrics as metrics_module
from kadapt_operator import render as render_module
from kadapt_operator.crd import CRD_FILE
from kadapt_operator.settings import load_settings
from kadapt_operator.validation import validate_object
from tests.helm.chart import (
    ALL_MONITORING,
    CASE_IDS,
    CASES,
    CHART_DIR,
    MONITORING_APIS,
    NAMESPACE,
    RELEASE,
    Case,
    render,
    render_case,
)

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema shipped.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
#: Kinds with no official schema: checked for well-formedness instead.
CUSTOM_KINDS = {
    "monitoring.coreos.com/v1": {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
    "kopf.dev/v1": {"KopfPeering", "ClusterKopfPeering"},
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _is_custom(obj: dict[str, Any]) -> bool:
    return obj["kind"] in CUSTOM_KINDS.get(obj["apiVersion"], set())


def _container(rendered: Any) -> dict[str, Any]:
    containers = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_lint_strict_passes(case: Case) -> None:
    values = dict(case.values)
    if case.api_versions:  # helm lint has no --api-versions: render the monitoring objects regardless
        values["monitoring"] = {**values.get("monitoring", {}), "assumeCRDsPresent": True}
    report = helm_python.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version="v1.31.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_builtin_object_passes_the_official_schema(case: Case) -> None:
    objects = render_case(case).objects
    assert objects
    for obj in objects:
        if _is_custom(obj):
            continue
        for version in KUBE_VERSIONS:
            # Raises ValidationError naming the bad field; strict rejects unknown fields too.
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_objects_are_well_formed_and_unique(case: Case) -> None:
    objects = render_case(case).objects
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "two objects with the same identity"
    for obj in objects:
        meta = obj["metadata"]
        assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert "namespace" not in meta
        else:
            assert meta["namespace"], f"{obj['kind']} {meta['name']} has no namespace"
        if _is_custom(obj) and obj["apiVersion"].startswith("monitoring."):
            assert isinstance(obj["spec"], dict) and obj["spec"]


def test_crds_in_chart_are_the_generated_crd() -> None:
    assert (CHART_DIR / "crds" / CRD_FILE.name).read_bytes() == CRD_FILE.read_bytes(), (
        "charts/kadapt/crds/ drifted from crds/: cp crds/adaptationjobs.kadapt.dev.yaml charts/kadapt/crds/"
    )


def test_chart_crds_pass_the_official_schema() -> None:
    crds = helm_python.Chart.load(CHART_DIR).crds
    names = set()
    for entry in crds:
        for doc in yaml.safe_load_all(entry["data"]):
            kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)
            names.add(doc["metadata"]["name"])
    assert names == {"adaptationjobs.kadapt.dev", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}


def test_no_crd_is_rendered_as_a_template() -> None:
    # Templates are upgraded and deleted with the release; CRDs must not be (they would take every job along).
    for case in CASES:
        assert not render_case(case).of_kind("CustomResourceDefinition")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_operator_pod_meets_the_restricted_pod_security_standard(case: Case) -> None:
    pod = render_case(case).one("Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert all("hostPath" not in v for v in pod["volumes"])
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True and sc.get("privileged") is not True
        assert all(p.get("hostPort") is None for p in c["ports"])
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["serviceAccountName"] == render_case(case).one("ServiceAccount")["metadata"]["name"]


def test_operator_runs_as_the_uid_the_images_and_trainer_pods_use() -> None:
    pod = render({}).one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == render_module.RUN_AS_USER
    dockerfile = (CHART_DIR.parents[1] / "Dockerfile").read_text()
    assert f"ARG KADAPT_UID={render_module.RUN_AS_USER}" in dockerfile


def _args(case: Case) -> list[str]:
    c = _container(render_case(case))
    if case.mode.peering:
        # kopf freezes peers of equal priority: each replica draws a random one.
        assert c["command"] == ["/bin/sh", "-c", 'exec kadapt "$@" --priority "$(shuf -i 1-2000000000 -n 1)"',
                                "kadapt"]
    else:
        assert c["command"] == ["kadapt"]
    return list(c["args"])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_operator_command_line_matches_the_mode(case: Case) -> None:
    args = _args(case)
    assert args[0] == "operator"
    assert args[args.index("--liveness") + 1] == "http://0.0.0.0:8080/healthz"
    namespaces = [args[i + 1] for i, a in enumerate(args) if a == "--namespace"]
    if case.mode.all_namespaces:
        assert "--all-namespaces" in args and namespaces == []
    else:
        assert "--all-namespaces" not in args and tuple(namespaces) == case.watched
    if case.mode.peering:
        assert "--standalone" not in args and args[args.index("--peering") + 1] == RELEASE
    else:
        assert "--standalone" in args and "--peering" not in args


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_replicas_bring_peering_objects_and_a_disruption_budget(case: Case) -> None:
    r = render_case(case)
    deployment = r.one("Deployment")
    pdbs = r.of_kind("PodDisruptionBudget")
    peerings = r.of_kind("KopfPeering") + r.of_kind("ClusterKopfPeering")
    if not case.mode.peering:
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert pdbs == [] and peerings == []
        return
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (pdb,) = pdbs
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # kopf pauses a --peering operator until its peering object exists.
    if case.mode.all_namespaces:
        assert [(p["kind"], p["metadata"]["name"]) for p in peerings] == [("ClusterKopfPeering", RELEASE)]
    else:
        assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(case.watched)
        assert {p["metadata"]["name"] for p in peerings} == {RELEASE}
    env = {e["name"]: e for e in _container(r)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_operator_config_is_what_the_settings_loader_reads(tmp_path: Path) -> None:
    values = {
        "config": {
            "trainerImage": {"repository": "registry.example/ml/trainer", "tag": "1.2.3", "pullPolicy": "Always"},
            "gpuPrices": {"default": 2.0, "nvidia-h100": 4.5},
            "currency": "EUR",
            "pollIntervalSeconds": 30,
            "defaultQueueName": "team-queue",
            "namespaceBudgets": {"team-a": 500},
            "namespaceBudgetPeriod": "week",
        },
        "metrics": {"port": 9100},
    }
    r = render(values)
    cm = r.one("ConfigMap")
    path = tmp_path / "operator.yaml"
    path.write_text(cm["data"]["operator.yaml"])
    settings = load_settings(path, env={})
    assert settings.trainer_image == "registry.example/ml/trainer:1.2.3"
    assert settings.image_pull_policy == "Always"
    assert settings.gpu_prices == {"default": 2.0, "nvidia-h100": 4.5}
    assert settings.currency == "EUR"
    assert settings.poll_interval_seconds == 30
    assert settings.default_queue_name == "team-queue"
    assert settings.namespace_budgets == {"team-a": 500}
    assert settings.namespace_budget_period == "week"
    assert settings.metrics_port == 9100
    c = _container(r)
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"] == 9100
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["KADAPT_OPERATOR_CONFIG"] == mounts["config"] + "/operator.yaml"
    volumes = {v["name"]: v for v in r.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]


def test_default_config_loads_and_names_the_chart_version_images(tmp_path: Path) -> None:
    r = render({})
    path = tmp_path / "operator.yaml"
    path.write_text(r.one("ConfigMap")["data"]["operator.yaml"])
    settings = load_settings(path, env={})
    app_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    assert settings.trainer_image.endswith(f":{app_version}")
    assert settings.default_queue_name is None
    assert _container(r)["image"].endswith(f":{app_version}")


def test_digest_pins_the_image() -> None:
    digest = "sha256:" + "a" * 64
    r = render({"image": {"digest": digest}, "config": {"trainerImage": {"digest": digest}}})
    assert _container(r)["image"] == f"ghcr.io/kadapt/kadapt-operator@{digest}"
    assert f"kadapt-trainer@{digest}" in r.one("ConfigMap")["data"]["operator.yaml"]


def test_config_change_rolls_the_operator() -> None:
    def checksum(values: dict[str, Any]) -> str:
        dep = render(values).one("Deployment")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) != checksum({"config": {"pollIntervalSeconds": 60}})


def test_metrics_service_selects_the_operator_pods() -> None:
    r = render({})
    svc = r.one("Service")
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}]


def _first_job_manifest(notes: str) -> dict[str, Any]:
    match = re.search(r"cat <<'YAML' \| kubectl -n \S+ apply -f -\n(.*?)\n\s*YAML\n", notes, re.S)
    assert match, notes
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return dict(yaml.safe_load("\n".join(line[indent:] for line in lines)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_notes_show_a_first_job_that_validates(case: Case) -> None:
    notes = render_case(case).notes
    job = validate_object(_first_job_manifest(notes), source="NOTES.txt")
    assert "get aj" in notes and job.metadata.name in notes
    namespace = "default" if case.mode.all_namespaces else case.watched[0]
    assert f"kubectl -n {namespace} apply -f -" in notes


def test_monitoring_is_gated_on_the_prometheus_operator_crds() -> None:
    values = {"monitoring": ALL_MONITORING}
    without = render(values)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert without.of_kind(kind) == []
        assert f"monitoring.coreos.com/v1 {kind}, so none was created" in without.notes
    with_crds = render(values, api_versions=MONITORING_APIS)
    assert with_crds.one("ServiceMonitor") and with_crds.one("PodMonitor")
    assert "so none was created" not in with_crds.notes
    forced = render({"monitoring": {**ALL_MONITORING, "assumeCRDsPresent": True}})
    assert forced.one("ServiceMonitor") and forced.one("PodMonitor")


def test_service_monitor_scrapes_the_metrics_service() -> None:
    r = render({"monitoring": ALL_MONITORING}, api_versions=MONITORING_APIS)
    sm = r.one("ServiceMonitor")
    svc = r.one("Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]


@pytest.mark.parametrize(("watch", "selector"), [
    ({"namespaces": ["team-a", "team-b"]}, {"matchNames": ["team-a", "team-b"]}),
    ({"allNamespaces": True}, {"any": True}),
])
def test_pod_monitor_scrapes_rank_zero_of_training_pods(watch: dict[str, Any], selector: dict[str, Any]) -> None:
    pm = render({"watch": watch, "monitoring": ALL_MONITORING}, api_versions=MONITORING_APIS).one("PodMonitor")
    assert pm["spec"]["namespaceSelector"] == selector
    assert pm["spec"]["selector"]["matchExpressions"] == [{"key": "kadapt.dev/job-name", "operator": "Exists"}]
    assert pm["spec"]["selector"]["matchLabels"] == {"batch.kubernetes.io/job-completion-index": "0"}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == render_module.METRICS_PORT_NAME and endpoint["path"] == "/metrics"
    # Trainer series carry the job's name under the same label as the operator's per-job series.
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_label_kadapt_dev_job_name"],
                                        "targetLabel": metrics_module.JOB_LABELS[1]}]


def test_monitoring_labels_reach_every_monitoring_object() -> None:
    values = {"monitoring": {**ALL_MONITORING, "additionalLabels": {"release": "prometheus"}}}
    r = render(values, api_versions=MONITORING_APIS)
    for obj in r.objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            assert obj["metadata"]["labels"]["release"] == "prometheus"


def _chart_with_files(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of the chart with the metrics engineer's files replaced (or removed)."""
    copy = tmp_path / "kadapt"
    shutil.copytree(CHART_DIR, copy)
    for name in ("dashboard.json", "prometheus-rules.yaml"):
        (copy / "files" / name).unlink(missing_ok=True)
    for name, text in files.items():
        (copy / "files" / name).write_text(text)
    return copy


RULES = """groups:
  - name: kadapt
    rules:
      - alert: KadaptJobFailed
        expr: sum by (namespace, job_name) (kadapt_job_phase{phase="Failed"}) > 0
        labels:
          severity: warning
        annotations:
          summary: "AdaptationJob {{ $labels.job_name }} failed"
"""
DASHBOARD = '{"title": "kadapt", "panels": [{"title": "Loss", "targets": [{"expr": "kadapt_loss"}]}]}'


def test_rules_and_dashboard_come_from_the_chart_files(tmp_path: Path) -> None:
    chart = helm_python.Chart.load(_chart_with_files(tmp_path, {"prometheus-rules.yaml": RULES,
                                                                  "dashboard.json": DASHBOARD}))
    try:
        files = chart.render({"monitoring": {**ALL_MONITORING, "assumeCRDsPresent": True}}, name=RELEASE,
                             namespace=NAMESPACE)
    finally:
        chart.close()
    objects = [d for k, v in files.items() if not k.endswith("NOTES.txt") for d in yaml.safe_load_all(v) if d]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES)  # Grafana/Prometheus {{ }} survive untouched
    (dash,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(dash["data"]["kadapt.json"]) == yaml.safe_load(DASHBOARD)
    kubernetes_validate.validate(dash, KUBE_VERSIONS[0], strict=True)


def test_missing_rules_and_dashboard_render_nothing(tmp_path: Path) -> None:
    chart = helm_python.Chart.load(_chart_with_files(tmp_path, {}))
    try:
        files = chart.render({"monitoring": {**ALL_MONITORING, "assumeCRDsPresent": True}}, name=RELEASE)
    finally:
        chart.close()
    kinds = [d["kind"] for k, v in files.items() if not k.endswith("NOTES.txt") for d in yaml.safe_load_all(v) if d]
    assert "PrometheusRule" not in kinds and kinds.count("ConfigMap") == 1
    notes = next(v for k, v in files.items() if k.endswith("NOTES.txt"))
    assert "ships no files/prometheus-rules.yaml" in notes and "ships no files/dashboard.json" in notes


def test_shipped_rules_and_dashboard_are_well_formed() -> None:
    rules_file = CHART_DIR / "files" / "prometheus-rules.yaml"
    dashboard_file = CHART_DIR / "files" / "dashboard.json"
    assert rules_file.exists() and dashboard_file.exists()
    r = render({"monitoring": ALL_MONITORING}, api_versions=MONITORING_APIS)
    if rules_file.exists():
        groups = r.one("PrometheusRule")["spec"]["groups"]
        assert groups and all(g["name"] and g["rules"] for g in groups)
        for rule in (rule for g in groups for rule in g["rules"]):
            assert ("alert" in rule) != ("record" in rule) and rule["expr"]
    if dashboard_file.exists():
        dash = next(o for o in r.of_kind("ConfigMap") if o["metadata"]["name"].endswith("-dashboard"))
        assert yaml.safe_load(dash["data"]["kadapt.json"])["panels"]


def test_prices_given_with_helm_set_are_numbers(tmp_path: Path) -> None:
    # `helm install --set config.gpuPrices.default=2.5` passes "2.5" as a string.
    values = helm_python.parse_set_string("config.gpuPrices.default=2.5,config.namespaceBudgets.team-a=99.5")
    assert values["config"]["gpuPrices"]["default"] == "2.5"
    path = tmp_path / "operator.yaml"
    path.write_text(render(values).one("ConfigMap")["data"]["operator.yaml"])
    settings = load_settings(path, env={})
    assert settings.gpu_prices["default"] == 2.5 and settings.namespace_budgets == {"team-a": 99.5}
    assert "'2.5'" not in path.read_text()
