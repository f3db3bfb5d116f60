"""End to end: kubectl -> emulated API server -> the real kadapt operator -> Job -> local pods train.

Everything here is the real thing except the cluster's own controllers: KMock's emulator is
the API server, the kadapt operator (kopf) runs against it over HTTP, a real ``kubectl``
creates the AdaptationJob, and ``LocalKubelet`` plays the Job controller and kubelet by
running the rendered pods with the local executor: torchrun, DeepSpeed over gloo, two
processes, a tiny BERT model built in the test. The operator's own status logic, progress
polling (rank 0's ``/progress``) and cost accounting see a real training run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadapt_operator.local.executor import processes_marked
from kadapt_trainer.config import RESULT_FILE, ProgressReport
from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV, HOLD_RELEASE_FILE_ENV
from tests.harness import checks
from tests.harness.emulator import AJOBS, TEST_SETTINGS, Cluster, OperatorHandle
from tests.harness.kubelet import LocalKubelet
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NS = "default"
KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local "node": its pvc claims hold the tiny model and the data, as volumes would."""
    root = tmp_path_factory.mktemp("e2e-node")
    make_model(root / "pvc" / "models" / "tiny-bert", "bert")
    write_jsonl(root / "pvc" / "data" / "keywords.jsonl", classification_rows(96))
    return root


def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def apply(cluster: Cluster, tmp_path: Path, doc: dict[str, Any]) -> None:
    """``kubectl apply`` the manifest, as a user would (the emulator serves no OpenAPI document)."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = kubectl(cluster, "apply", "--validate=false", "-f", str(path))
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.get(AJOBS, NS, name)
    return dict((obj or {}).get("status") or {})


def wait_status(
    cluster: Cluster, name: str, ready: Callable[[dict[str, Any]], bool], timeout: float, message: str
) -> dict[str, Any]:
    """The job's status once ``ready`` holds for it."""

    def check() -> dict[str, Any]:
        st = status(cluster, name)
        return st if st and ready(st) else {}

    found: dict[str, Any] = cluster.wait_for(check, timeout=timeout, interval=0.2, message=message)
    return found


def finished(st: dict[str, Any]) -> bool:
    return st.get("phase") in ("Succeeded", "Failed")


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c.get("type") == type_), {})


def job_doc(name: str, **kw: Any) -> dict[str, Any]:
    doc = manifest(name, "pvc://models/tiny-bert", "pvc://data/keywords.jsonl", workers=2, **kw)
    doc["metadata"]["namespace"] = NS
    return doc


def hold_pods(monkeypatch: pytest.MonkeyPatch, step: int, release: Path | None = None) -> None:
    """Pods started from now on (they inherit this process's environment) hold after ``step``.

    Every rank waits there until a stop signal (a suspension, a gang restart) or until
    ``release`` appears, so each check below sees the state it waits for however fast this
    machine trains, instead of racing the run to its end.
    """
    monkeypatch.setenv(HOLD_AFTER_STEP_ENV, str(step))
    if release is not None:
        monkeypatch.setenv(HOLD_RELEASE_FILE_ENV, str(release))


def test_kubectl_apply_trains_with_live_status_then_succeeds(
    cluster: Cluster,
    kubelet: LocalKubelet,
    operator: OperatorHandle,
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "e2e-train"
    release = tmp_path / "release"
    hold_pods(monkeypatch, 3, release)
    apply(cluster, tmp_path, job_doc(name, epochs=8))

    # While it trains: Running, with progress from rank 0 and cost from the pods' running time.
    def running_with_progress(st: dict[str, Any]) -> bool:
        progress = st.get("progress") or {}
        cost = st.get("cost") or {}
        return st.get("phase") == "Running" and progress.get("step", 0) > 0 and cost.get("costSoFar", 0) > 0

    live = wait_status(cluster, name, running_with_progress, 180, "Running with progress")
    assert condition(live, "Running")["status"] == "True"
    assert live["progress"]["step"] > 0
    assert live["strategy"]["resolved"] == "full"
    assert live["parameters"]["trainable"] == live["parameters"]["total"] > 0
    assert live["cost"]["pricePerGPUHour"] == TEST_SETTINGS["gpu_prices"]["default"]
    assert live["cost"]["gpuSeconds"] > 0  # two pods x one GPU each, counted from their start times
    assert live["progress"]["step"] < live["progress"]["totalSteps"]  # seen mid-run: held at step 3

    release.touch()
    done = wait_status(cluster, name, finished, 240, "finished")
    assert done["phase"] == "Succeeded", json.dumps(done, indent=2)
    assert condition(done, "Succeeded")["status"] == "True"
    assert done["output"]["uri"] == f"pvc://models/{name}"
    assert "eval_loss" in done["output"]["metrics"]
    assert done["cost"]["costSoFar"] >= live["cost"]["costSoFar"]
    assert done.get("restarts", 0) == 0

    # The output is on the claim, written by rank 0 of a two-process gloo group.
    result = ProgressReport.model_validate_json((run_dir / "pvc" / "models" / name / RESULT_FILE).read_text())
    assert result.state == "succeeded" and result.world_size == 2
    assert result.step == result.total_steps
    got = kubectl(cluster, "get", "adaptationjob", name, "-o", "yaml")
    assert got.returncode == 0, got.stderr
    assert yaml.safe_load(got.stdout)["status"]["phase"] == "Succeeded"


def test_killed_worker_counts_a_restart_and_resumes_from_the_checkpoint(
    cluster: Cluster,
    kubelet: LocalKubelet,
    operator: OperatorHandle,
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "e2e-restart"
    # Held after the checkpoint of step 5 until the gang restart stops it: pod 1 is still
    # training when it is killed. The second gang resumes past step 5 and does not hold.
    hold_pods(monkeypatch, 5)
    apply(cluster, tmp_path, job_doc(name, epochs=8, checkpoint_every=5))
    checkpoint = run_dir / "pvc" / "models" / name / "checkpoints" / "latest"
    cluster.wait_for(
        lambda: status(cluster, name).get("phase") == "Running" and checkpoint.exists(),
        timeout=180,
        interval=0.2,
        message="Running with a checkpoint",
    )
    first = kubelet.current(name, NS)
    assert first is not None
    killed = kubelet.kill_worker(name, 1, NS)
    assert killed, "pod 1 had no trainer process to kill"

    restarted = wait_status(cluster, name, lambda st: st.get("restarts", 0) >= 1, 120, "restart counted")
    assert restarted["restarts"] == 1
    # The restart is explained where users look: an Event naming the failed pod and its exit code.
    events = cluster.wait_for(
        lambda: [e for e in checks.events_for(cluster, name, NS) if "after a worker failure" in e.get("message", "")],
        timeout=30,
        message="restart Event",
    )
    assert f"{name}-1-" in events[0]["message"] and "exited 1" in events[0]["message"], events[0]["message"]

    done = wait_status(cluster, name, finished, 300, "finished after the restart")
    assert done["phase"] == "Succeeded", json.dumps(done, indent=2)
    assert done["restarts"] == 1
    incarnations = [uid for ns, n, uid in kubelet.launched if (ns, n) == (NS, name)]
    assert len(incarnations) == 2 and first.uid == incarnations[0]
    # The second gang picked up the first one's checkpoint instead of starting over.
    assert "kadapt: resumed from" in kubelet.log_of(name, 0)
    # ... and the first gang left no process behind: not the surviving peer's torchrun worker
    # (a session of its own), not a worker whose agent died before it.
    left = [proc.cmdline() for pod in first.gang.pods for proc in processes_marked(pod.marker)]
    assert left == [], f"the first gang's processes outlived it: {left}"


def test_budget_suspends_with_a_checkpoint_and_raising_it_resumes(
    cluster: Cluster,
    kubelet: LocalKubelet,
    operator: OperatorHandle,
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "e2e-budget"
    # Held after the checkpoint of step 5 until the suspension's SIGTERM: the budget stop lands
    # mid-run. The resumed gang starts past step 5 and does not hold.
    hold_pods(monkeypatch, 5)
    apply(cluster, tmp_path, job_doc(name, epochs=8, checkpoint_every=5, extra_spec={"budget": {"maxCost": 100}}))
    checkpoint = run_dir / "pvc" / "models" / name / "checkpoints" / "latest"
    wait_status(
        cluster, name, lambda st: st.get("phase") == "Running" and checkpoint.exists(), 180, "Running, checkpointed"
    )

    # Lower the budget below what is spent: the operator suspends the Job, the pods stop.
    lowered = kubectl(
        cluster, "patch", "adaptationjob", name, "--type", "merge", "-p", '{"spec":{"budget":{"maxCost":0.0001}}}'
    )
    assert lowered.returncode == 0, lowered.stderr
    suspended = wait_status(cluster, name, lambda st: st.get("phase") == "Suspended", 60, "Suspended")
    assert condition(suspended, "BudgetExceeded")["status"] == "True"
    cluster.wait_for(lambda: kubelet.current(name, NS) is None, timeout=60, message="pods stopped")
    spent = suspended["cost"]["costSoFar"]
    assert spent > 0.0001

    # Raise it again: the gang comes back and continues from its checkpoint.
    raised = kubectl(
        cluster, "patch", "adaptationjob", name, "--type", "merge", "-p", '{"spec":{"budget":{"maxCost":100}}}'
    )
    assert raised.returncode == 0, raised.stderr
    done = wait_status(cluster, name, finished, 300, "finished after resuming")
    assert done["phase"] == "Succeeded", json.dumps(done, indent=2)
    assert condition(done, "BudgetExceeded")["status"] == "False"
    assert done.get("restarts", 0) == 0  # a budget stop is not a failure
    assert done["cost"]["costSoFar"] >= spent
    assert "kadapt: resumed from" in kubelet.log_of(name, 0)
