"""A finished job's figures are final: no GPUs held, lastCheckpoint in the user's own URI."""

from __future__ import annotations

from kadapt_operator.runtime.progress import progress_status, user_uri
from kadapt_trainer.config import ProgressReport
from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, Cluster, OperatorHandle, complete_job_status, job_manifest

NS = "team-b"


def test_last_checkpoint_is_reported_as_the_users_uri() -> None:
    report = ProgressReport(step=10, total_steps=20, last_checkpoint="/mnt/kadapt/pvc/out/ckpt/step-00000010")
    assert progress_status(report).last_checkpoint == "pvc://out/ckpt/step-00000010"
    assert user_uri("/data/local/ckpt") == "/data/local/ckpt"
    assert user_uri("pvc://out/ckpt") == "pvc://out/ckpt"


def _allocated(operator: OperatorHandle, name: str) -> float | None:
    for line in operator.runtime.metrics.render().decode().splitlines():
        if line.startswith("kadapt_job_allocated_gpus{") and f'job_name="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_finished_job_holds_no_gpus_in_its_metrics(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("finisher", NS))
    checks.start_gang(cluster, "finisher", NS)
    cluster.wait_for(lambda: _allocated(operator, "finisher") == 2, message="2 GPUs while running")
    cluster.set_status(JOBS, NS, "finisher", complete_job_status(2))
    cluster.wait_for(lambda: checks.status_of(cluster, "finisher", NS).get("phase") == "Succeeded", message="done")
    cluster.wait_for(lambda: _allocated(operator, "finisher") == 0, message="0 GPUs once finished")
