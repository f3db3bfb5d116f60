"""A budget stops a real training run gracefully; raising it resumes the run to success.

The real operator runs against the API emulator. This test plays the Job controller and the
kubelet for the operator's Indexed Job (one worker): it runs the pod with the local executor
(``torchrun`` of the trainer on a tiny model), reports it Running and, when it ends,
Terminated with the times it really ran; it deletes the pods of a suspended Job and creates a
new one when the Job is resumed. GPU seconds in the job's status must equal the sum of the
reported running times, to the second, across a suspension, a resume and an operator restart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV, HOLDING_LINE
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    EVENTS,
    JOBS,
    PODS,
    SERVICES,
    Cluster,
    job_manifest,
    wait_for,
)
from tests.trainer.tiny import classification_rows, make_model, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAMESPACE = "team-b"
JOB = "budget-e2e"
PRICE = 36.0  # per GPU-hour: one GPU-second costs 0.01
T = TypeVar("T")




def rfc3339(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def whole_second_now() -> datetime:
    """Kubernetes reports container times to the second."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class RanPod:
    name: str
    log: Path
    started: datetime
    finished: datetime | None = None
    exit_code: int | None = None

    @property
    def seconds(self) -> float:
        assert self.finished is not None
        return (self.finished - self.started).total_seconds()


class Kubelet:
    """The Job controller and the kubelet, for a one-worker Indexed Job, on this machine."""

    def __init__(self, cluster: Cluster, run_dir: Path, progress_port: int) -> None:
        from kadapt_operator.local.executor import ExecOptions

        self.cluster = cluster
        self.opts = ExecOptions(
            run_dir=run_dir, extra_env={"KADAPT_PROGRESS_PORT": str(progress_port)}, grace_seconds=60.0
        )
        self.gang: Any = None
        self.pod: RanPod | None = None

    def job(self) -> dict[str, Any] | None:
        return self.cluster.get(JOBS, NAMESPACE, JOB)

    def start(self, hold_after_step: int | None = None) -> RanPod:
        """Create pod 0 of the (unsuspended) Job and run it (held after a step until stopped, if asked)."""
        from kadapt_operator.local.executor import Gang, plan_pods

        batch = self.job()
        assert batch is not None and not batch["spec"].get("suspend")
        cms = {cm["metadata"]["name"]: cm for cm in self.cluster.list(CONFIGMAPS, NAMESPACE)}
        opts = self.opts
        if hold_after_step is not None:
            opts = replace(opts, extra_env={**opts.extra_env, HOLD_AFTER_STEP_ENV: str(hold_after_step)})
        plans = plan_pods(batch, cms, self.cluster.get(SERVICES, NAMESPACE, JOB), opts)
        pod = self.cluster.make_pod(batch, 0, ip="127.0.0.1")
        self.gang = Gang(plans)
        started = whole_second_now()
        self.gang.start()
        ran = RanPod(pod["metadata"]["name"], plans[0].log_path, started)
        self.cluster.set_status(PODS, NAMESPACE, ran.name, {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "startTime": rfc3339(started),
            "containerStatuses": [{"name": "trainer", "ready": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": rfc3339(started)}}}],
        })
        self.pod = ran
        return ran

    def finish(self, *, stop: bool) -> RanPod:
        """The pod's process ends (SIGTERM first when ``stop``); report it Terminated."""
        assert self.gang is not None and self.pod is not None
        if stop:
            self.gang.stop()
        result = self.gang.wait(timeout=300)
        ran = self.pod
        ran.finished = whole_second_now()
        ran.exit_code = result.exit_codes[0]
        self.cluster.set_status(PODS, NAMESPACE, ran.name, {
            "phase": "Succeeded" if ran.exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0, "state": {
                "terminated": {"exitCode": ran.exit_code, "startedAt": rfc3339(ran.started),
                               "finishedAt": rfc3339(ran.finished)}}}],
        })
        return ran

    def delete_pod(self) -> None:
        assert self.pod is not None
        self.cluster.delete(PODS, NAMESPACE, self.pod.name)


def status(cluster: Cluster) -> dict[str, Any]:
    return dict((cluster.get(AJOBS, NAMESPACE, JOB) or {}).get("status") or {})


def in_phase(cluster: Cluster, phase: str) -> dict[str, Any] | None:
    """The job's status once it is in ``phase``, else None."""
    st = status(cluster)
    return st if st.get("phase") == phase else None


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c.get("type") == kind), {})


def gpu_seconds(cluster: Cluster) -> float:
    return float((status(cluster).get("cost") or {}).get("gpuSeconds") or 0.0)


def test_budget_suspends_keeps_the_checkpoint_and_raising_it_resumes_to_success(tmp_path: Path) -> None:
    from kadapt_operator.local.executor import free_port

    progress_port = free_port()
    run_dir = tmp_path / "run"
    pvc = run_dir / "pvc"
    make_model(pvc / "models" / "tiny-bert", "bert")
    write_jsonl(pvc / "data" / "reviews.jsonl", classification_rows(60))
    manifest = job_manifest(
        JOB,
        NAMESPACE,
        # Full fine-tuning through the engine; the first pod holds after step 20 (below), so the
        # budget stop lands mid-run without a long run: 4 epochs of 12 steps.
        strategy={"type": "full"},
        training={"epochs": 4, "globalBatchSize": 4, "microBatchSize": 4, "earlyStopping": {"enabled": False}},
        checkpoint={"everySteps": 20},
        resources={"workers": 1, "gpusPerWorker": 1, "cpu": "1", "memory": "1Gi"},
        budget={"maxCost": 100.0},
    )
    settings = {"progress_port": progress_port, "gpu_prices": {"default": PRICE}, "poll_interval_seconds": 0.3}
    checkpoints = pvc / "out" / JOB / "checkpoints"

    with Cluster(namespaces=(NAMESPACE,)) as cluster:
        kubelet = Kubelet(cluster, run_dir, progress_port)
        try:
            with cluster.operator(settings_overrides=settings):
                cluster.create(AJOBS, manifest)
                wait_for(kubelet.job, timeout=30, message="the Job")
                # The trainer holds after step 20 (its first checkpoint) until the suspension's
                # SIGTERM: the budget stop lands mid-run however fast this machine trains.
                first = kubelet.start(hold_after_step=20)
                wait_for(lambda: HOLDING_LINE.format(step=20) in first.log.read_text(),
                         timeout=180, message="the trainer held at step 20")
                wait_for(
                    lambda: status(cluster).get("lastCheckpoint"),
                    timeout=60, message="a first checkpoint in status",
                )

                # The budget becomes tiny: already spent, so the operator suspends the Job.
                cluster.patch(AJOBS, NAMESPACE, JOB, {"spec": {"budget": {"maxCost": 0.001}}})
                wait_for(
                    lambda: (kubelet.job() or {}).get("spec", {}).get("suspend"),
                    timeout=30, message="the Job suspended",
                )
                # Job controller: a suspended Job's pods are stopped; the trainer checkpoints on SIGTERM.
                kubelet.finish(stop=True)
                assert "stopped by signal; checkpoint saved" in first.log.read_text()
                wait_for(lambda: gpu_seconds(cluster) == first.seconds, timeout=30, message="the stopped pod accounted")
                kubelet.delete_pod()
                st = wait_for(lambda: in_phase(cluster, "Suspended"), timeout=30, message="phase Suspended")
                assert st is not None
                budget = condition(st, "BudgetExceeded")
                assert budget.get("status") == "True", st["conditions"]
                assert budget["reason"] == "MaxCostReached" and "spec.budget.maxCost" in budget["message"]
                assert condition(st, "Suspended").get("status") == "True"
                events = wait_for(lambda: [
                    e for e in cluster.list(EVENTS, NAMESPACE)
                    if e.get("involvedObject", {}).get("name") == JOB and "budget" in e.get("message", "").lower()
                ], timeout=30, message="a budget Event")
                assert any(e.get("type") == "Warning" for e in events)
                saved = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-"))
                assert saved, "no checkpoint kept"
                spent = gpu_seconds(cluster)
                assert spent == first.seconds > 0

            # The operator restarts: nothing in memory; the ledger is read back from status.
            with cluster.operator(settings_overrides=settings) as restarted:
                # several ticks of the new operator (counted, not timed) while the job stays suspended
                restarted.wait_handled(NAMESPACE, JOB, more=3, trigger="tick", timeout=60)
                assert gpu_seconds(cluster) == spent
                assert status(cluster).get("phase") == "Suspended"
                assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-")) == saved

                # Raising the budget resumes the Job from its checkpoint.
                cluster.patch(AJOBS, NAMESPACE, JOB, {"spec": {"budget": {"maxCost": 100.0}}})
                wait_for(lambda: (kubelet.job() or {}).get("spec", {}).get("suspend") is False,
                         timeout=30, message="the Job resumed")
                second = kubelet.start()
                kubelet.finish(stop=False)
                assert second.exit_code == 0, second.log.read_text()[-3000:]
                log = second.log.read_text()
                assert "resumed from" in log, log[-3000:]
                hand = first.seconds + second.seconds
                wait_for(lambda: gpu_seconds(cluster) == hand, timeout=30, message="both pods accounted")
                # Job controller: the Job is complete.
                cluster.set_status(JOBS, NAMESPACE, JOB, {
                    "succeeded": 1, "active": 0,
                    "conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}],
                })
                final = wait_for(lambda: in_phase(cluster, "Succeeded"), timeout=30, message="phase Succeeded")
                assert final is not None
                assert condition(final, "BudgetExceeded").get("status") == "False"
                cost = final["cost"]
                assert cost["gpuSeconds"] == hand
                assert cost["costSoFar"] == pytest.approx(hand / 3600 * PRICE, abs=1e-6)
                assert (pvc / "out" / JOB / "kadapt-result.json").exists()
                # A budget suspension is neither a worker failure nor a disruption: the pod exits
                # 143 through kadapt's launcher, and the operator ignores pods stopped by a suspend.
                counted = (final.get("restarts", 0), final.get("disruptions", 0))
                assert first.exit_code == 143, f"the stopped pod exited {first.exit_code}"
                assert counted == (0, 0), f"restarts, disruptions = {counted}; first pod exited {first.exit_code}"
        finally:
            if kubelet.gang is not None:
                kubelet.gang.stop(grace=5)
