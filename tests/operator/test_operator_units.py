"""Pure pieces of the operator runtime: status derivation, conditions, apply rules, startup options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import typer
from typer.testing import CliRunner

from kadapt_operator.api import AdaptationJobStatus, Condition, Parameters, ResolvedStrategy
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime import stored
from kadapt_operator.runtime.apply import mutable_patch
from kadapt_operator.runtime.login import client_configuration, connection_info
from kadapt_operator.runtime.options import FINALIZER, RuntimeOptions, configure
from kadapt_operator.runtime.progress import progress_status, rank0
from kadapt_trainer.config import ProgressReport

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(uid: str = "j1", **status: Any) -> st.JobView:
    return st.job_view({"metadata": {"name": "x", "uid": uid}, "spec": {"completions": 2}, "status": status})


def pod(index: int, *, uid: str = "j1", **status: Any) -> st.PodView:
    return st.pod_view(
        {
            "metadata": {
                "name": f"x-{index}",
                "labels": {st.CONTROLLER_UID: uid},
                "annotations": {st.COMPLETION_INDEX: str(index)},
            },
            "spec": {"containers": [{"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
            "status": status,
        }
    )


def terminated(code: int) -> dict[str, Any]:
    return {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": code}}}]}


def test_pod_view_reads_a_progress_port_annotation() -> None:
    meta: dict[str, Any] = {"name": "p", "annotations": {st.PROGRESS_PORT_ANNOTATION: "40123"}}
    assert st.pod_view({"metadata": meta}).progress_port == 40123
    meta["annotations"][st.PROGRESS_PORT_ANNOTATION] = "http"
    assert st.pod_view({"metadata": meta}).progress_port is None


def test_pod_view_reads_index_gpus_and_failure_kind() -> None:
    p = pod(1, **terminated(143))
    assert p.index == 1 and p.gpus == 2 and p.failed and p.is_disruption
    p = pod(0, **terminated(1))
    assert p.failed and not p.is_disruption
    disrupted = {**terminated(1), "conditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert pod(0, **disrupted).is_disruption


@pytest.mark.parametrize(
    ("pods", "verdict", "reason"),
    [
        ([pod(0, phase="Running"), pod(1, phase="Running")], st.Verdict.NONE, st.Reason.PODS_RUNNING),
        ([pod(0, phase="Running"), pod(1, **terminated(1))], st.Verdict.WORKER_FAILED, st.Reason.WORKER_FAILED),
        ([pod(0, phase="Running"), pod(1, **terminated(143))], st.Verdict.DISRUPTED, st.Reason.DISRUPTED),
        ([pod(0, **terminated(143)), pod(1, **terminated(2))], st.Verdict.WORKER_FAILED, st.Reason.WORKER_FAILED),
        ([pod(0, phase="Running"), pod(1, **terminated(1), uid="old")], st.Verdict.NONE, st.Reason.PODS_STARTING),
    ],
)
def test_observe_classifies_the_gang(pods: list[st.PodView], verdict: st.Verdict, reason: str) -> None:
    obs = st.observe(job(), pods, workers=2, suspend_reason=None)
    assert obs.verdict == verdict
    assert [c.reason for c in obs.conditions if c.type == st.RUNNING] == [reason]


def test_observe_success_deadline_suspension_and_pending() -> None:
    assert st.observe(job(succeeded=2), [], workers=2, suspend_reason=None).phase == st.SUCCEEDED
    failed = job(conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    assert st.observe(failed, [], workers=2, suspend_reason=None).verdict == st.Verdict.DEADLINE
    assert st.observe(job(), [], workers=2, suspend_reason=st.Reason.BUDGET_EXCEEDED).phase == st.SUSPENDED
    assert st.observe(None, [], workers=2, suspend_reason=None).phase == st.PENDING


def test_set_conditions_moves_transition_time_only_on_status_change() -> None:
    first = st.set_conditions([], [st.CondUpdate(st.RUNNING, st.FALSE, "PodsStarting", "0/2")], now=NOW, generation=1)
    later = NOW + timedelta(minutes=5, microseconds=250)
    same = st.set_conditions(
        first, [st.CondUpdate(st.RUNNING, st.FALSE, "PodsStarting", "1/2")], now=later, generation=1
    )
    assert same[0].last_transition_time == first[0].last_transition_time and same[0].message == "1/2"
    flipped = st.set_conditions(same, [st.CondUpdate(st.RUNNING, st.TRUE, "PodsRunning")], now=later, generation=2)
    assert flipped[0].last_transition_time == later.replace(microsecond=0)  # second precision, as Kubernetes
    assert flipped[0].observed_generation == 2
    ordered = st.set_conditions(
        flipped, [st.CondUpdate(st.CREATED, st.TRUE, "ChildrenCreated")], now=later, generation=2
    )
    assert [c.type for c in ordered] == [st.CREATED, st.RUNNING]


def test_transitions_only_report_changes() -> None:
    old = [Condition(type="Running", status="True", reason="PodsRunning")]
    new = [*old, Condition(type="Failed", status="True", reason="DeadlineExceeded")]
    assert [c.type for c in st.transitions(old, new)] == ["Failed"]
    moved = [Condition(type="Running", status="True", reason="Resumed")]
    assert [c.reason for c in st.transitions(old, moved)] == ["Resumed"]


STORED = {
    "phase": "Running",
    "startTime": "2026-01-01T12:00:00Z",
    "conditions": [{"type": "Running", "status": "True", "reason": "PodsRunning", "message": ""}],
    "cost": {"gpuSeconds": 10.0, "costSoFar": 0.5, "accountedUntil": {"p-0": "2026-01-01T12:00:10Z"}},
    "someFieldOfANewerOperator": {"kept": True},
}


def test_status_patch_writes_only_what_changed() -> None:
    old = stored.status_of({"status": STORED})
    same = old.model_copy(deep=True)
    same.phase = "Running"
    same.cost = same.cost.model_copy(update={"projected_cost": None})
    assert stored.status_patch(old, same) is None  # a None that is absent is no change (idle jobs: no PATCH)
    new = old.model_copy(deep=True)
    new.phase = "Succeeded"
    new.cost = old.cost.model_copy(update={"gpu_seconds": 12.0, "accounted_until": {"p-1": "2026-01-01T12:00:12Z"}})
    assert stored.status_patch(old, new) == {
        "phase": "Succeeded",
        "cost": {"gpuSeconds": 12.0, "accountedUntil": {"p-0": None, "p-1": "2026-01-01T12:00:12Z"}},
    }


def test_merge_patch_round_trips() -> None:
    old = {"a": 1, "m": {"x": 1, "y": 2}, "gone": [1], "list": [1, 2]}
    new = {"a": 1, "m": {"x": 1, "z": 3}, "list": [2], "added": {"k": "v"}}
    patch = stored.merge_patch(old, new)
    assert patch == {"m": {"y": None, "z": 3}, "gone": None, "list": [2], "added": {"k": "v"}}


def test_reading_status_drops_only_the_fields_that_do_not_parse() -> None:
    status = stored.status_of({"status": {**STORED, "startTime": "yesterday", "restarts": "many"}})
    assert status.phase == "Running" and status.start_time is None and status.restarts == 0
    assert status.cost.accounted_until == {"p-0": "2026-01-01T12:00:10Z"}
    assert stored.status_of({}) == AdaptationJobStatus()
    assert stored.meta_of({"metadata": {"generation": "x", "name": "a"}}).name == "a"


def test_restart_delay_is_exponential_and_capped() -> None:
    assert [st.restart_delay(n, 10, 60) for n in range(6)] == [0.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_mutable_patch_touches_only_suspend_and_config_data() -> None:
    desired = {"kind": "Job", "spec": {"suspend": True, "parallelism": 2}}
    assert mutable_patch(desired, {"spec": {"suspend": False, "parallelism": 9}}) == {"spec": {"suspend": True}}
    assert mutable_patch(desired, {"spec": {"suspend": True}}) == {}
    assert mutable_patch({"kind": "ConfigMap", "data": {"a": "1"}}, {"data": {"a": "0"}}) == {"data": {"a": "1"}}
    assert mutable_patch({"kind": "Service", "spec": {"x": 1}}, {"spec": {"x": 2}}) == {}


def test_progress_status_maps_the_report() -> None:
    report = ProgressReport(
        step=5,
        total_steps=20,
        loss=1.23456,
        trainable_params=10,
        total_params=1000,
        strategy="partial",
        strategy_reason="medium data",
        last_checkpoint="pvc://c/1",
    )
    out = progress_status(report)
    assert out.progress.percent == 25.0 and out.progress.loss == 1.2346
    assert out.parameters == Parameters(trainable=10, total=1000, percent=1.0)
    assert out.strategy == ResolvedStrategy(resolved="partial", reason="medium data")
    assert out.last_checkpoint == "pvc://c/1"
    first = rank0([pod(1, phase="Running", podIP="10.0.0.2"), pod(0, phase="Running", podIP="10.0.0.1")])
    assert first is not None and first.ip == "10.0.0.1"


def test_runtime_options_reject_ambiguous_scopes() -> None:
    with pytest.raises(ValueError, match="--all-namespaces or --namespace"):
        RuntimeOptions(namespaces=("a",), clusterwide=True)
    with pytest.raises(ValueError, match="--namespace NS"):
        RuntimeOptions()
    with pytest.raises(ValueError, match="--peering NAME"):
        RuntimeOptions(namespaces=("a",), standalone=False)


def test_configure_sets_kadapt_prefix_and_peering() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, RuntimeOptions(clusterwide=True, standalone=False, peering_name="kadapt", priority=5))
    assert settings.persistence.finalizer == FINALIZER == "kadapt.dev/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "kadapt.dev"
    assert settings.peering.name == "kadapt" and settings.peering.priority == 5 and settings.peering.clusterwide
    assert settings.watching.server_timeout == 600


def test_kubeconfig_login_reads_the_current_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u, namespace: ns}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://k:6443', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
    )
    options = RuntimeOptions(namespaces=("ns",), kubeconfig=path)
    info = connection_info(client_configuration(options))
    assert (info.server, info.token, info.scheme, info.insecure) == ("https://k:6443", "abc", "Bearer", True)
    path.write_text("clusters: []\n")
    with pytest.raises(kopf.LoginError, match=f"kubeconfig {path}"):
        client_configuration(options)


def test_cli_registers_operator_and_rejects_bad_scope() -> None:
    from kadapt_operator.runtime.cli import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer in multi-command mode
        """Nothing."""

    result = CliRunner().invoke(app, ["operator", "--help"])
    assert result.exit_code == 0 and "--all-namespaces" in result.output and "--peering" in result.output
    result = CliRunner().invoke(app, ["operator", "--standalone"])
    assert result.exit_code == 2 and "--namespace NS" in result.output

