"""The local executor against hand-written rendered objects (no renderer, no trainer).

The Job below has the shape the renderer produces (Indexed, ConfigMap at /etc/kadapt, a pvc
claim under /mnt/kadapt/pvc, the completion index through a fieldRef, torchrun pointed at
``<job>-0.<job>:29500``), but its container runs a small script instead of the trainer, so these
tests check the executor alone: real processes, a real gloo rendezvous across two "pods".
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from kadapt_operator.local.executor import (
    PROGRESS_PORT_ENV,
    ExecOptions,
    Gang,
    GangPhase,
    PodSpecUnsupported,
    expand,
    plan_pods,
    processes_marked,
    split_objects,
)
from tests.harness.emulator import wait_for

JOB = "demo"
CLAIM = "work"

#: Every rank reports the sum of (rank + 1) over the gang and what it saw of its pod.
WORKER = textwrap.dedent(
    """
    import json, os, pathlib, sys
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    out = pathlib.Path(os.environ["KADAPT_PVC_ROOT"]) / "work" / f"rank-{dist.get_rank()}.json"
    out.write_text(json.dumps({
        "sum": t.item(),
        "world": dist.get_world_size(),
        "index": os.environ["JOB_COMPLETION_INDEX"],
        "greeting": os.environ["GREETING"],
        "progress_port": os.environ["KADAPT_PROGRESS_PORT"],
        "argv": sys.argv[1:],
    }))
    dist.destroy_process_group()
    """
)


def rendered(
    workers: int, command: list[str], *, data: dict[str, str] | None = None, env: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """ConfigMap, Service and Indexed Job shaped like the renderer's."""
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{JOB}-config", "namespace": "team"},
        "data": {"worker.py": WORKER, **(data or {})},
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": JOB, "namespace": "team"},
        "spec": {
            "clusterIP": "None",
            "ports": [{"name": "metrics", "port": 9090}, {"name": "rendezvous", "port": 29500}],
        },
    }
    container = {
        "name": "trainer",
        "image": "ignored:locally",
        "command": command,
        "env": [
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
                },
            },
            {"name": "KADAPT_PVC_ROOT", "value": "/mnt/kadapt/pvc"},
            {"name": "WHO", "value": "rank$(JOB_COMPLETION_INDEX)"},
            {"name": "GREETING", "value": "hello $(WHO) $$(WHO) $(UNDEFINED)"},
            *(env or []),
        ],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/kadapt", "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "pvc-0", "mountPath": f"/mnt/kadapt/pvc/{CLAIM}"},
        ],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "namespace": "team"},
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "template": {
                "metadata": {"labels": {"kadapt.dev/job-name": JOB}},
                "spec": {
                    "restartPolicy": "Never",
                    "subdomain": JOB,
                    "terminationGracePeriodSeconds": 20,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{JOB}-config"}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        {"name": "pvc-0", "persistentVolumeClaim": {"claimName": CLAIM}},
                    ],
                },
            },
        },
    }
    return [cm, svc, job]


def torchrun(workers: int) -> list[str]:
    return [
        "torchrun",
        "--nnodes",
        str(workers),
        "--nproc-per-node",
        "1",
        "--node-rank",
        "$(JOB_COMPLETION_INDEX)",
        "--master-addr",
        f"{JOB}-0.{JOB}",
        "--master-port",
        "29500",
        "/etc/kadapt/worker.py",
        "--out=/mnt/kadapt/pvc/work/x",
    ]


def plans_for(objects: list[dict[str, Any]], tmp_path: Path, **kw: Any) -> Any:
    job, cms, svc = split_objects(objects)
    return plan_pods(job, cms, svc, ExecOptions(run_dir=tmp_path / "run", **kw))


class TestExpand:
    def test_defined_undefined_and_escaped(self) -> None:
        env = {"A": "1", "B": "two"}
        assert expand("$(A)-$(B)", env) == "1-two"
        assert expand("$(MISSING)", env) == "$(MISSING)"
        assert expand("$$(A)", env) == "$(A)"
        assert expand("cost $5 and $$", env) == "cost $5 and $"
        assert expand("$(A", env) == "$(A"
        assert expand("", env) == ""


class TestPlan:
    def test_translates_index_hosts_ports_and_mounts(self, tmp_path: Path) -> None:
        plans = plans_for(rendered(2, torchrun(2)), tmp_path)
        assert [p.index for p in plans] == [0, 1]
        run = tmp_path / "run"
        for p in plans:
            argv = list(p.argv)
            assert argv[argv.index("--node-rank") + 1] == str(p.index)
            assert argv[argv.index("--master-addr") + 1] == "127.0.0.1"
            assert argv[-2] == str(run / "config" / f"{JOB}-config" / "worker.py")
            assert argv[-1] == f"--out={run / 'pvc' / CLAIM / 'x'}"
            assert p.env["KADAPT_PVC_ROOT"] == str(run / "pvc")
            assert p.env[PROGRESS_PORT_ENV] == str(p.progress_port)
            assert p.env["GREETING"] == f"hello rank{p.index} $(WHO) $(UNDEFINED)"
            assert p.gpus == 1
        # One rendezvous port for the gang, not the rendered one; a progress port per pod.
        ports = {list(p.argv)[list(p.argv).index("--master-port") + 1] for p in plans}
        assert len(ports) == 1 and ports != {"29500"}
        assert plans[0].progress_port != plans[1].progress_port
        assert (run / "config" / f"{JOB}-config" / "worker.py").read_text() == WORKER
        assert (run / "pvc" / CLAIM).is_dir()

    def test_env_built_from_a_mounted_path_is_rewritten_once(self, tmp_path: Path) -> None:
        # HOME=/tmp on an emptyDir, and a value built from it: the run dir may itself lie under /tmp.
        objects = rendered(
            1, ["sh", "-c", "echo $(CACHE)", "$(HOME)/x"], env=[{"name": "CACHE", "value": "$(HOME)/cache"}]
        )
        pod = objects[2]["spec"]["template"]["spec"]
        pod["volumes"].append({"name": "tmp", "emptyDir": {}})
        pod["containers"][0]["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
        pod["containers"][0]["env"].insert(0, {"name": "HOME", "value": "/tmp"})
        (plan,) = plans_for(objects, tmp_path)
        home = tmp_path / "run" / "pods" / f"{JOB}-0" / "volumes" / "tmp"
        assert plan.env["HOME"] == str(home)
        assert plan.env["CACHE"] == f"{home}/cache"
        assert plan.argv[-2:] == (f"echo {home}/cache", f"{home}/x")

    def test_rank0_progress_port_can_be_pinned(self, tmp_path: Path) -> None:
        plans = plans_for(rendered(2, torchrun(2)), tmp_path, rank0_progress_port=45678)
        assert plans[0].progress_port == 45678 and plans[0].env[PROGRESS_PORT_ENV] == "45678"
        assert plans[1].progress_port != 45678

    def test_secret_volume_is_refused(self, tmp_path: Path) -> None:
        objects = rendered(1, ["true"])
        pod = objects[2]["spec"]["template"]["spec"]
        pod["volumes"].append({"name": "creds", "secret": {"secretName": "s"}})
        pod["containers"][0]["volumeMounts"].append({"name": "creds", "mountPath": "/creds"})
        with pytest.raises(PodSpecUnsupported, match="'creds' \\(secret\\) cannot be mapped"):
            plans_for(objects, tmp_path)

    def test_secret_env_is_refused_with_a_hint(self, tmp_path: Path) -> None:
        objects = rendered(
            1, ["true"], env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        )
        with pytest.raises(PodSpecUnsupported, match="export the variable instead"):
            plans_for(objects, tmp_path, inherit_env=False)

    def test_secret_env_comes_from_the_users_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HF_TOKEN", "hf_exported")
        objects = rendered(
            1, ["true"], env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        )
        (plan,) = plans_for(objects, tmp_path)
        assert plan.env["HF_TOKEN"] == "hf_exported"


class TestGang:
    def test_two_pods_rendezvous_over_gloo(self, tmp_path: Path) -> None:
        plans = plans_for(rendered(2, torchrun(2)), tmp_path)
        gang = Gang(plans)
        gang.start()
        result = gang.wait(timeout=120)
        logs = "\n".join("\n".join(p.log_tail()) for p in gang.pods)
        assert result.phase == GangPhase.SUCCEEDED, logs
        assert result.exit_codes == {0: 0, 1: 0}
        for rank in (0, 1):
            seen = json.loads((tmp_path / "run" / "pvc" / CLAIM / f"rank-{rank}.json").read_text())
            assert seen["sum"] == 3.0 and seen["world"] == 2
            assert seen["index"] == str(rank)
            assert seen["progress_port"] == str(plans[rank].progress_port)

    def test_one_failure_stops_the_gang(self, tmp_path: Path) -> None:
        # Pod 1 fails at once; pod 0 would wait for a signal forever: the gang must not wait for it.
        script = (
            "import os, signal, sys\n"
            "if os.environ['JOB_COMPLETION_INDEX'] == '1':\n"
            "    print('ValueError: pod one is broken', flush=True); sys.exit(3)\n"
            "while True: signal.pause()\n"
        )
        plans = plans_for(rendered(2, [sys.executable, "-c", script]), tmp_path, grace_seconds=5)
        gang = Gang(plans)
        gang.start()
        result = gang.wait(timeout=50)
        assert result.phase == GangPhase.FAILED
        assert result.failed_index == 1
        assert result.exit_codes[1] == 3
        assert result.exit_codes[0] == 128 + 15  # SIGTERM'd by the gang, not left running
        failing = gang.failing_pod()
        assert failing is not None and "pod one is broken" in failing.log_tail()[-1]

    @pytest.mark.parametrize("main_alive", [True, False])
    def test_stop_leaves_no_worker_in_a_session_of_its_own(self, tmp_path: Path, main_alive: bool) -> None:
        """torchrun starts each worker with ``start_new_session``: a process-group kill misses it.

        The pod's main process starts such a worker (ignoring SIGTERM, like a trainer held
        mid-run) and then either waits or exits at once (its agent killed before it): either
        way the stop must end the worker too.
        """
        worker = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)\n"
        main = (
            "import subprocess, sys, time\n"
            f"w = subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True)\n"
            "print(w.pid, flush=True)\n"
            + ("while True: time.sleep(1)\n" if main_alive else "")
        )
        plans = plans_for(rendered(1, [sys.executable, "-c", main]), tmp_path, grace_seconds=1)
        gang = Gang(plans)
        gang.start()
        (pod,) = gang.pods
        pid = int(wait_for(lambda: (pod.log_tail() or [""])[0].strip(), timeout=120, message="the worker's pid"))
        if not main_alive:
            wait_for(lambda: pod.returncode is not None, timeout=120, message="the main process exited")
        assert {proc.pid for proc in processes_marked(pod.marker)} == ({pid, pod.pid} if main_alive else {pid})
        gang.stop()
        assert processes_marked(pod.marker) == [], "the worker outlived its pod"

    def test_stop_sends_sigterm_then_kills(self, tmp_path: Path) -> None:
        # Pod 0 checkpoints on SIGTERM (exit 143); pod 1 ignores it and is killed after the grace period.
        script = (
            "import os, signal, sys\n"
            "if os.environ['JOB_COMPLETION_INDEX'] == '0':\n"
            "    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
            "else:\n"
            "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "while True: signal.pause()\n"
        )
        plans = plans_for(rendered(2, [sys.executable, "-c", script]), tmp_path, grace_seconds=2)
        gang = Gang(plans)
        gang.start()
        # both handlers are installed before the stop, on a loaded machine too
        wait_for(lambda: all("ready" in pod.log_tail() for pod in gang.pods), timeout=120, message="both pods ready")
        gang.stop()
        result = gang.result()
        assert result.phase == GangPhase.STOPPED
        assert result.exit_codes == {0: 143, 1: 128 + 9}
