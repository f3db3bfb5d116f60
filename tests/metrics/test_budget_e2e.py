"""A budget stops a real training run gracefully; raising it resumes the run to success.

The real operator runs against the API emulator; the harness's :class:`LocalKubelet` plays the
Job controller and the kubelet for its Indexed Job (one worker): it runs the pod with the local
executor (``torchrun`` of the trainer on a tiny model) and reports it Running and, when it ends,
Terminated with the times it really ran. Asked to (``keep_suspended_pods``), it keeps a
suspended Job's stopped pod until the test deletes it, and (``complete_jobs=False``) leaves the
Job's completion to the test: the test holds each state until the operator has billed it. GPU
seconds in the job's status must equal the sum of the reported running times, to the second,
across a suspension, a resume and an operator restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV, HOLDING_LINE
from tests.harness.emulator import AJOBS, EVENTS, JOBS, PODS, Cluster, complete_job_status, job_manifest, wait_for
from tests.harness.kubelet import LocalKubelet
from tests.trainer.tiny import classification_rows, make_model, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAMESPACE = "team-b"
JOB = "budget-e2e"
PRICE = 36.0  # per GPU-hour: one GPU-second costs 0.01
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"


@dataclass(frozen=True)
class Ended:
    """A pod's trainer as the kubelet reported it Terminated: what the operator bills."""

    name: str
    exit_code: int
    seconds: float


def ended(cluster: Cluster, kubelet: LocalKubelet, gang: int) -> Ended | None:
    """Pod 0 of the ``gang``-th gang the kubelet launched, once reported Terminated; else None."""
    if len(kubelet.launched) <= gang:
        return None
    uid = kubelet.launched[gang][2]
    for pod in cluster.list(PODS, NAMESPACE):
        if (pod["metadata"].get("labels") or {}).get(CONTROLLER_UID) != uid:
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                started, finished = (datetime.fromisoformat(term[k]) for k in ("startedAt", "finishedAt"))
                return Ended(pod["metadata"]["name"], int(term["exitCode"]), (finished - started).total_seconds())
    return None


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
    from kadapt_trainer.ports import free_port

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

    with Cluster(namespaces=(NAMESPACE,)) as cluster, LocalKubelet(
        cluster,
        run_dir,
        progress_port=progress_port,
        grace_seconds=60.0,
        # The first gang holds after step 20 (its first checkpoint) until the suspension's
        # SIGTERM: the budget stop lands mid-run however fast this machine trains.
        extra_env={HOLD_AFTER_STEP_ENV: "20"},
        keep_suspended_pods=True,
        complete_jobs=False,
    ) as kubelet:
        with cluster.operator(settings_overrides=settings):
            cluster.create(AJOBS, manifest)
            wait_for(lambda: HOLDING_LINE.format(step=20) in kubelet.log_of(JOB, 0),
                     timeout=180, message="the trainer held at step 20")
            del kubelet.extra_env[HOLD_AFTER_STEP_ENV]  # read at the next launch: the resumed gang runs on
            wait_for(
                lambda: status(cluster).get("lastCheckpoint"),
                timeout=60, message="a first checkpoint in status",
            )

            # The budget becomes tiny: already spent, so the operator suspends the Job; the
            # kubelet stops its pod (SIGTERM: the trainer checkpoints) and reports it Terminated.
            cluster.patch(AJOBS, NAMESPACE, JOB, {"spec": {"budget": {"maxCost": 0.001}}})
            first = wait_for(lambda: ended(cluster, kubelet, 0), timeout=120, message="the stopped pod Terminated")
            assert (cluster.get(JOBS, NAMESPACE, JOB) or {})["spec"].get("suspend") is True
            assert "stopped by signal; checkpoint saved" in kubelet.log_of(JOB, 0)
            wait_for(lambda: gpu_seconds(cluster) == first.seconds, timeout=30, message="the stopped pod accounted")
            assert kubelet.delete_pods(JOB, NAMESPACE) == [first.name]
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
            assert len(kubelet.launched) == 1  # nothing ran while suspended

            # Raising the budget resumes the Job from its checkpoint: the kubelet runs a new gang.
            cluster.patch(AJOBS, NAMESPACE, JOB, {"spec": {"budget": {"maxCost": 100.0}}})
            second = wait_for(lambda: ended(cluster, kubelet, 1), timeout=300, message="the resumed pod Terminated")
            log = kubelet.log_of(JOB, 0)
            assert second.exit_code == 0, log[-3000:]
            assert "resumed from" in log, log[-3000:]
            hand = first.seconds + second.seconds
            wait_for(lambda: gpu_seconds(cluster) == hand, timeout=30, message="both pods accounted")
            # Job controller: the Job is complete.
            cluster.set_status(JOBS, NAMESPACE, JOB, {**complete_job_status(1), "active": 0})
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
        assert not kubelet.errors, kubelet.errors
