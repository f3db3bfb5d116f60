"""End to end: a GitOps re-apply after the TTL does not train again; ``kadapt.dev/rerun`` does.

A real training run (``kubectl apply`` -> the real operator -> Job -> local pods, as in
``test_local_pods.py``) finishes; ``ttlSecondsAfterFinished`` removes its children; the job is
deleted and the same manifest applied again, as Argo CD's self-heal or a Flux re-apply would.
The new object succeeds at once from the result recorded in ``kadapt-results``, and no gang is
launched for it. Applied again with ``kadapt.dev/rerun: "true"``, it trains.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadapt_operator.results import ANN_RERUN
from kadapt_operator.runtime.cleanup import ANN_CHILDREN_REMOVED
from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, Cluster, OperatorHandle
from tests.harness.kubelet import LocalKubelet
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NS = "default"
_REPO_KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
#: The repository's kubectl (scripts/setup.sh installs it), else the one on PATH (a git worktree).
KUBECTL = str(_REPO_KUBECTL) if _REPO_KUBECTL.exists() else (shutil.which("kubectl") or str(_REPO_KUBECTL))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local "node": its pvc claims hold the tiny model and the data, as volumes would."""
    root = tmp_path_factory.mktemp("e2e-gitops-node")
    make_model(root / "pvc" / "models" / "tiny-bert", "bert")
    write_jsonl(root / "pvc" / "data" / "keywords.jsonl", classification_rows(64))
    return root


def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True, timeout=60
    )


def apply(cluster: Cluster, tmp_path: Path, doc: dict[str, Any]) -> None:
    """``kubectl apply`` the manifest, as a GitOps tool would (the emulator serves no OpenAPI document)."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = kubectl(cluster, "apply", "--validate=false", "-f", str(path))
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout


def delete(cluster: Cluster, name: str) -> None:
    """``kubectl delete`` the job (no finalizer: it is gone at once)."""
    done = kubectl(cluster, "delete", "adaptationjob", name, "-n", NS, "--wait=false")
    assert done.returncode == 0, done.stderr
    cluster.wait_for(lambda: cluster.get(AJOBS, NS, name) is None, message=f"{name} deleted")


def status_when(
    cluster: Cluster, name: str, ready: Callable[[dict[str, Any]], bool], timeout: float, message: str
) -> dict[str, Any]:
    """The job's status once ``ready`` holds for it."""

    def check() -> dict[str, Any]:
        st = dict((cluster.get(AJOBS, NS, name) or {}).get("status") or {})
        return st if st and ready(st) else {}

    found: dict[str, Any] = cluster.wait_for(check, timeout=timeout, interval=0.2, message=message)
    return found


def succeeded_condition(st: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c.get("type") == "Succeeded"), {})


def gangs(kubelet: LocalKubelet, name: str) -> list[str]:
    """The Job incarnations the kubelet launched pods for."""
    return [uid for ns, n, uid in kubelet.launched if (ns, n) == (NS, name)]


def test_a_gitops_reapply_after_the_ttl_does_not_train_again(
    cluster: Cluster, kubelet: LocalKubelet, operator: OperatorHandle, tmp_path: Path
) -> None:
    name = "e2e-gitops"
    doc = manifest(
        name, "pvc://models/tiny-bert", "pvc://data/keywords.jsonl", workers=2, epochs=1,
        extra_spec={"runPolicy": {"ttlSecondsAfterFinished": 0}},
    )
    doc["metadata"]["namespace"] = NS
    apply(cluster, tmp_path, copy.deepcopy(doc))
    done = status_when(cluster, name, lambda st: st.get("phase") in ("Succeeded", "Failed"), 300, "finished")
    assert done["phase"] == "Succeeded", done
    first = cluster.get(AJOBS, NS, name)
    assert first is not None
    cluster.wait_for(
        lambda: ANN_CHILDREN_REMOVED in ((cluster.get(AJOBS, NS, name) or {})["metadata"].get("annotations") or {}),
        timeout=30, message="the TTL removed the children",
    )
    assert cluster.get(JOBS, NS, name) is None
    trained = checks.status_of(cluster, name, NS)
    assert "eval_loss" in trained["output"]["metrics"]
    assert len(gangs(kubelet, name)) == 1

    # Deleted, then re-applied unchanged from git (Argo CD self-heal, Flux): no second training run.
    delete(cluster, name)
    apply(cluster, tmp_path, copy.deepcopy(doc))
    again = status_when(cluster, name, lambda st: st.get("phase") == "Succeeded", 30, "Succeeded again")
    reused = succeeded_condition(again)
    assert reused["reason"] == "ReusedResult" and first["metadata"]["uid"] in reused["message"]
    assert again["output"] == trained["output"]
    operator.wait_handled(NS, name, more=2, trigger="tick")
    assert len(gangs(kubelet, name)) == 1, "the re-applied job was trained again"
    assert checks.creations(cluster, JOBS, NS, name) == 1

    # Asked to, it trains again.
    delete(cluster, name)
    rerun = copy.deepcopy(doc)
    rerun["metadata"]["annotations"] = {ANN_RERUN: "true"}
    apply(cluster, tmp_path, rerun)
    done = status_when(cluster, name, lambda st: st.get("phase") in ("Succeeded", "Failed"), 300, "rerun finished")
    assert done["phase"] == "Succeeded" and succeeded_condition(done)["reason"] == "JobCompleted", done
    assert len(gangs(kubelet, name)) == 2
