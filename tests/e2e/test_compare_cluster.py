"""``kadapt compare --cluster`` end to end (issue 14, item 6): one AdaptationJob per strategy on a cluster.

The user's command runs as its own process with a kubeconfig pointing at KMock's emulator; the
real kadapt operator reconciles the jobs it creates, and ``LocalKubelet`` trains their pods
for real (torchrun, DeepSpeed over gloo, the tiny BERT of ``tests.trainer.tiny``). The table,
the JSON and the chart must tell what the jobs' status says; running the command again adopts
the jobs instead of training them twice. The error paths (no cluster, no CRD, no permission,
a clashing job) each give one line with the fix and say which jobs exist.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from kadapt_operator.labels import LABEL_COMPARISON, LABEL_STRATEGY
from tests.harness.emulator import AJOBS, TEST_SETTINGS, Cluster, OperatorHandle
from tests.harness.kubelet import LocalKubelet
from tests.local.test_run_plots import assert_png
from tests.trainer.tiny import classification_rows, make_model, manifest, write_jsonl

pytestmark = [pytest.mark.e2e]

NS = "default"
ROOT = Path(__file__).resolve().parents[2]


def kadapt(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The ``kadapt`` command line in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "kadapt_operator.cli", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},  # one table row per line
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_job(tmp_path: Path, name: str, **kw: Any) -> Path:
    doc = manifest(name, "pvc://models/tiny-bert", "pvc://data/keywords.jsonl", **kw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def jobs_of(cluster: Cluster, comparison: str) -> dict[str, dict[str, Any]]:
    """The comparison's AdaptationJobs in the emulator, by strategy label."""
    return {
        obj["metadata"]["labels"][LABEL_STRATEGY]: obj
        for obj in cluster.list(AJOBS, NS)
        if (obj["metadata"].get("labels") or {}).get(LABEL_COMPARISON) == comparison
    }


def one_line(stderr: str) -> str:
    """The command's error line (rich may wrap nothing: it prints soft-wrapped)."""
    lines = [line for line in stderr.splitlines() if line.startswith("kadapt compare --cluster:")]
    assert len(lines) == 1, stderr
    return lines[0]


# -- the real thing: operator, kubelet, training ----------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local "node" of ``tests/e2e/conftest.py``'s cluster: its claims hold the tiny model and the data."""
    root = tmp_path_factory.mktemp("compare-node")
    make_model(root / "pvc" / "models" / "tiny-bert", "bert")
    write_jsonl(root / "pvc" / "data" / "keywords.jsonl", classification_rows(64))
    return root


@pytest.mark.slow
def test_compare_on_the_cluster_trains_one_job_per_strategy_and_tables_their_status(
    cluster: Cluster, kubelet: LocalKubelet, operator: OperatorHandle, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, "cmp", epochs=2)
    out = tmp_path / "out"
    args = ["compare", str(job_file), "--strategies", "head-only,full", "--cluster"]
    args += ["--kubeconfig", str(cluster.kubeconfig), "--run-dir", str(out)]
    done = kadapt(*args, "-o", "json")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "created AdaptationJob default/cmp-head-only" in done.stderr

    # One job per strategy: deterministic names, the comparison's labels, the same split and seed.
    jobs = jobs_of(cluster, "cmp")
    assert set(jobs) == {"head-only", "full"}
    for strategy, obj in jobs.items():
        assert obj["metadata"]["name"] == f"cmp-{strategy}"
        assert obj["spec"]["strategy"]["type"] == strategy
        assert obj["spec"]["output"]["uri"] == f"pvc://models/cmp-{strategy}"
        assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=2)
    assert {o["spec"]["dataset"]["validationSplit"] for o in jobs.values()} == {0.2}
    assert {o["spec"]["training"]["seed"] for o in jobs.values()} == {42}

    # The JSON holds the figures of the jobs' status.
    result = json.loads(done.stdout)
    assert result["namespace"] == NS and result["currency"] == "USD"
    rows = {r["strategy"]: r for r in result["strategies"]}
    assert list(rows) == ["head-only", "full"]
    for strategy, row in rows.items():
        st = jobs[strategy]["status"]
        assert row["job"] == f"cmp-{strategy}" and row["status"] == "succeeded" and row["reason"] is None
        assert row["accuracy"] == st["output"]["metrics"]["accuracy"]
        assert row["macro_f1"] == st["output"]["metrics"]["macro_f1"]
        assert row["trainable_params"] == st["parameters"]["trainable"] > 0
        assert row["total_params"] == st["parameters"]["total"]
        assert row["gpu_seconds"] == st["cost"]["gpuSeconds"] > 0
        assert row["cost"] == st["cost"]["costSoFar"] > 0
        assert st["cost"]["pricePerGPUHour"] == TEST_SETTINGS["gpu_prices"]["default"]
    assert rows["head-only"]["trainable_params"] < rows["full"]["trainable_params"]
    assert sum(r["best_value"] for r in rows.values()) == 1 and sum(r["recommended"] for r in rows.values()) == 1
    assert result["recommended"] in rows and result["bestValue"] in rows
    assert json.loads((out / "compare.json").read_text()) == result
    assert result["chart"] == str(out / "compare.png")
    assert_png(out / "compare.png")

    # The same command again adopts the finished jobs (no second training) and prints the table.
    uids = {s: o["metadata"]["uid"] for s, o in jobs.items()}
    again = kadapt(*args)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "adopted AdaptationJob default/cmp-full (same spec)" in again.stderr
    assert {s: o["metadata"]["uid"] for s, o in jobs_of(cluster, "cmp").items()} == uids
    assert sorted(name for _, name, _ in kubelet.launched) == ["cmp-full", "cmp-head-only"]  # trained once each
    table = again.stdout
    assert "kadapt compare cmp" in table
    for strategy, row in rows.items():
        line = next((x for x in table.splitlines() if re.search(rf"\b{strategy}\b", x)), "")
        assert f"{row['accuracy']:.4f}" in line and f"{row['cost']:.4f}" in line, table + again.stderr
    assert "recommended" in table and "best per cost" in table
    assert f"chart: {out / 'compare.png'}" in table


# -- the error paths: one line with the fix, and which jobs exist ------------------------------------
@pytest.fixture
def bare_cluster() -> Iterator[Cluster]:
    """An emulator without operator: the command's own requests are what is tested."""
    with Cluster(namespaces=(NS,)) as c:
        yield c


def test_waits_on_the_jobs_states_and_tables_a_failed_job_with_its_reason(
    bare_cluster: Cluster, tmp_path: Path
) -> None:
    # No operator here: the test plays it, so each state the command waits on is set explicitly.
    job_file = write_job(tmp_path, "states")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "kadapt_operator.cli", "compare", str(job_file), "--cluster", "-o", "json"]
    command += ["--strategies", "head-only,full", "--kubeconfig", str(bare_cluster.kubeconfig), "--run-dir", str(out)]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        bare_cluster.wait_for(lambda: len(jobs_of(bare_cluster, "states")) == 2, timeout=60, message="both jobs")
        bare_cluster.set_status(
            AJOBS, NS, "states-head-only",
            {
                "phase": "Succeeded",
                "parameters": {"trainable": 99, "total": 5000},
                "cost": {"gpuSeconds": 20.0, "costSoFar": 0.02, "currency": "USD"},
                "startTime": "2026-12-01T05:00:00Z",
                "completionTime": "2026-12-01T05:00:20Z",
                "output": {"metrics": {"accuracy": 0.9, "macro_f1": 0.88}},
            },
        )  # fmt: skip
        failure = {"type": "Failed", "status": "True", "reason": "BadInput", "message": "dataset: no label column"}
        bare_cluster.set_status(AJOBS, NS, "states-full", {"phase": "Failed", "conditions": [failure]})
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr  # a strategy failed
    rows = {r["strategy"]: r for r in json.loads(stdout)["strategies"]}
    assert rows["head-only"]["status"] == "succeeded" and rows["head-only"]["accuracy"] == 0.9
    assert rows["head-only"]["wall_seconds"] == 20.0 and rows["head-only"]["recommended"]
    assert rows["full"]["status"] == "failed" and rows["full"]["reason"] == "BadInput: dataset: no label column"
    assert "default/states-full: Failed" in stderr
    assert_png(out / "compare.png")


def test_a_timeout_leaves_the_jobs_running_and_says_how_to_wait_again(bare_cluster: Cluster, tmp_path: Path) -> None:
    # No operator: the jobs stay Pending, the command gives up after --timeout and says so per job.
    job_file = write_job(tmp_path, "slow")
    done = kadapt(
        "compare", str(job_file), "--cluster", "--strategies", "lora", "--timeout", "1",
        "--kubeconfig", str(bare_cluster.kubeconfig), "--run-dir", str(tmp_path / "out"), "-o", "json",
    )  # fmt: skip
    assert done.returncode == 1
    (row,) = json.loads(done.stdout)["strategies"]
    assert row["status"] == "pending" and row["job"] == "slow-lora"
    assert row["reason"] == "not finished after --timeout 1s; the same command waits again"
    assert set(jobs_of(bare_cluster, "slow")) == {"lora"}  # left running, not deleted
    assert "chart not drawn: no strategy finished" in done.stderr


def test_a_clashing_job_is_named_with_the_fix_and_the_jobs_created_before_it(
    bare_cluster: Cluster, tmp_path: Path
) -> None:
    clash = manifest("clash-full", "pvc://models/other", "pvc://data/keywords.jsonl")
    clash["metadata"]["namespace"] = NS
    bare_cluster.create(AJOBS, clash)
    job_file = write_job(tmp_path, "clash")
    done = kadapt(
        "compare", str(job_file), "--strategies", "head-only,full", "--cluster",
        "--kubeconfig", str(bare_cluster.kubeconfig), "--timeout", "1",
    )  # fmt: skip
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "AdaptationJob default/clash-full already exists with another spec (spec.model differs)" in line
    assert "kubectl delete adaptationjob clash-full -n default" in line
    assert "Created before that: clash-head-only" in line
    assert f"kubectl delete adaptationjobs -n default -l {LABEL_COMPARISON}=clash" in line
    assert set(jobs_of(bare_cluster, "clash")) == {"head-only"}  # the one it says it created


def test_forbidden_says_which_role_is_missing_and_creates_nothing(bare_cluster: Cluster, tmp_path: Path) -> None:
    def forbid() -> None:
        path = "/apis/kadapt.dev/v1alpha1/namespaces/default/adaptationjobs"
        bare_cluster.emulator["post", path] << 403 << {
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": 'adaptationjobs.kadapt.dev is forbidden: User "tester" cannot create resource "adaptationjobs"',
        }  # fmt: skip

    bare_cluster.in_loop(forbid)
    job_file = write_job(tmp_path, "denied")
    done = kadapt("compare", str(job_file), "--cluster", "--kubeconfig", str(bare_cluster.kubeconfig))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "creating AdaptationJob default/denied-head-only: forbidden" in line
    assert 'User "tester" cannot create' in line
    assert "kubectl create rolebinding kadapt-edit --clusterrole=edit --user=YOU -n default" in line
    assert line.endswith("No job was created.")


def test_no_crd_says_how_to_install_it(tmp_path: Path) -> None:
    with Cluster(namespaces=(NS,)) as cluster:
        cluster.in_loop(lambda: cluster.emulator.resources.__delitem__(kmock.resource(AJOBS)))
        job_file = write_job(tmp_path, "nocrd")
        done = kadapt("compare", str(job_file), "--cluster", "--kubeconfig", str(cluster.kubeconfig))
        assert done.returncode == 1
        line = one_line(done.stderr)
        assert "the AdaptationJob CRD (adaptationjobs.kadapt.dev) is not installed on http://" in line
        assert "kadapt crd | kubectl apply -f -" in line and line.endswith("No job was created.")
        assert cluster.list(AJOBS) == []


def test_no_cluster_and_no_kubeconfig_are_one_line_each(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "gone",
                "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
            }
        )
    )
    job_file = write_job(tmp_path, "offline")
    done = kadapt("compare", str(job_file), "--cluster", "--kubeconfig", str(kubeconfig))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"cannot reach the Kubernetes API server at http://127.0.0.1:{port}" in line
    assert "kubectl cluster-info" in line

    missing = kadapt("compare", str(job_file), "--cluster", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 1
    line = one_line(missing.stderr)
    assert f"no credentials for the cluster from {tmp_path / 'nope'}" in line and "--kubeconfig PATH" in line

    wrong_context = kadapt("compare", str(job_file), "--cluster", "--kubeconfig", str(kubeconfig), "--context", "prod")
    assert wrong_context.returncode == 1
    assert "kubectl config get-contexts" in one_line(wrong_context.stderr)
