"""The Job controller, kubelet and garbage collector of an emulated cluster, with local processes.

KMock's emulator stores objects and runs no controllers. ``LocalKubelet`` watches it (by
polling, as a test-sized controller may) for the batch/v1 Jobs the kadapt operator creates and
does what a cluster would do with them, for real:

* Job controller: creates one Pod per completion index (``Cluster.make_pod``), writes the
  Job's status (``active``, ``Complete`` when every index succeeded, ``Failed`` by the
  podFailurePolicy's FailJob rule when a trainer exits nonzero other than 143) and terminates
  the remaining pods of a failed Job; suspending a Job deletes its pods;
* kubelet: runs each pod's container with the local executor (the very same translation as
  ``kadapt run``: index -> node rank, the Service's DNS -> 127.0.0.1, volumes -> folders,
  pvc claims under ``<run-dir>/pvc``) and writes the pod's status back (phase, ``podIP``
  127.0.0.1, conditions, the trainer's containerStatus with its exit code and times);
* garbage collector: when the operator deletes a Job (a gang restart), its processes are
  stopped (SIGTERM, SIGKILL after the grace period) and its Pods deleted.

Two options let a test hold the cluster at a state the operator must act on first (tests
wait on states, never on time): ``keep_suspended_pods`` reports a suspended Job's pods
Terminated, with the times they really ran, and keeps them until the test calls
:meth:`LocalKubelet.delete_pods` (so that it can wait for the operator to bill them);
``complete_jobs=False`` leaves a Job whose pods all succeeded for the test to mark Complete.

Every pod serves on its own free port (all pods share the address 127.0.0.1), and says which
in its ``kadapt.dev/progress-port`` annotation, which the operator's progress poll honours
over its ``progress_port`` setting. A new gang of a job starts only once the previous one has
exited (two gangs on two CPU cores would only slow each other down).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadapt_operator.labels import LABEL_JOB_NAME
from kadapt_operator.local.executor import (
    LOCALHOST,
    ExecOptions,
    Gang,
    PodSpecUnsupported,
    plan_pods,
)
from kadapt_trainer.config import EXIT_STOPPED
from tests.harness.emulator import (
    CONFIGMAPS,
    JOBS,
    PODS,
    SERVICES,
    ApiError,
    Cluster,
    complete_job_status,
    running_status,
    terminated_status,
)

log = logging.getLogger("kadapt.test.kubelet")


def _now() -> str:
    """RFC 3339 in UTC, second precision, as Kubernetes writes times."""
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Seconds between two looks at the emulator and the local processes.
INTERVAL_SECONDS = 0.2
#: SIGTERM-to-SIGKILL delay for test pods (the rendered 120 s would only slow failures down).
GRACE_SECONDS = 20.0
#: Reason the Job controller gives a Job failed by a podFailurePolicy rule.
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"


@dataclass
class _Run:
    """One incarnation of a Job (its uid) and its local pods."""

    namespace: str
    name: str
    uid: str
    gang: Gang
    pod_names: dict[int, str]
    started_at: str
    reported: dict[int, int] = field(default_factory=dict)
    failed: bool = False
    finished: bool = False
    stop_deadline: float | None = None
    delete_pods: bool = False

    @property
    def alive(self) -> bool:
        return any(p.returncode is None for p in self.gang.pods)


class LocalKubelet:
    """Runs the kadapt Jobs of an emulated cluster as local processes (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        run_dir: Path,
        *,
        progress_port: int | None = None,
        grace_seconds: float = GRACE_SECONDS,
        extra_env: dict[str, str] | None = None,
        keep_suspended_pods: bool = False,
        complete_jobs: bool = True,
    ) -> None:
        self.cluster = cluster
        self.run_dir = run_dir
        #: None: a free port per pod, announced in the pod's annotation (the normal case).
        self.progress_port = progress_port
        self.grace_seconds = grace_seconds
        #: Read at each launch: a test may change it between two gangs.
        self.extra_env = dict(extra_env or {})
        self.keep_suspended_pods = keep_suspended_pods
        self.complete_jobs = complete_jobs
        self.runs: dict[str, _Run] = {}
        #: Every Job uid this kubelet started pods for, in order (a gang restart adds one).
        self.launched: list[tuple[str, str, str]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-kubelet", daemon=True)
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalKubelet:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the loop, then every local process (SIGTERM, SIGKILL after a short grace)."""
        self._stop.set()
        self._thread.join(30)
        for run in list(self.runs.values()):
            run.gang.stop(grace=5.0)

    def __enter__(self) -> LocalKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.tick()
            except Exception as exc:  # reported to the test; the loop keeps serving the others
                log.exception("kubelet tick failed")
                self.errors.append(exc)
            self._stop.wait(INTERVAL_SECONDS)

    # -- one pass ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Look at the Jobs once: tear down what was deleted or suspended, start what is new, report."""
        jobs = {
            j["metadata"]["uid"]: j
            for j in self.cluster.list(JOBS)
            if LABEL_JOB_NAME in (j["metadata"].get("labels") or {})
        }
        for uid, run in list(self.runs.items()):
            job = jobs.get(uid)
            if job is None:
                # Deleted by the operator (a gang restart): stop what runs, then garbage-collect the pods.
                if run.stop_deadline is None:
                    self._begin_stop(run, delete_pods=True)
                run.delete_pods = True
            elif job is not None and job["spec"].get("suspend") and run.stop_deadline is None and not run.finished:
                # Suspended: the Job controller deletes its pods (kept, reported, when the test asks).
                self._begin_stop(run, delete_pods=not self.keep_suspended_pods)
        for uid, job in jobs.items():
            if uid in self.runs or job["spec"].get("suspend") or self._finished(job):
                continue
            key = (job["metadata"]["namespace"], job["metadata"]["name"])
            if any((r.namespace, r.name) == key and r.alive for r in self.runs.values()):
                continue  # the previous gang still holds the job's ports; start when it is gone
            self._launch(job)
        for uid, run in list(self.runs.items()):
            self._observe(run)
            if run.stop_deadline is not None and not run.alive:
                self._report_exits(run, write=not run.delete_pods)
                if run.delete_pods:
                    for pod in run.pod_names.values():
                        with contextlib.suppress(ApiError):
                            self.cluster.delete(PODS, run.namespace, pod)
                    del self.runs[uid]

    @staticmethod
    def _finished(job: dict[str, Any]) -> bool:
        conditions = (job.get("status") or {}).get("conditions") or []
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)

    def _launch(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        pod_spec = job["spec"]["template"]["spec"]
        config_maps: dict[str, Any] = {}
        for vol in pod_spec.get("volumes") or []:
            if "configMap" in vol:
                cm = self.cluster.get(CONFIGMAPS, ns, vol["configMap"]["name"])
                if cm is None:
                    return  # a pod would stay ContainerCreating until it exists: try again next tick
                config_maps[vol["configMap"]["name"]] = cm
        service = self.cluster.get(SERVICES, ns, pod_spec.get("subdomain") or name)
        opts = ExecOptions(
            run_dir=self.run_dir,
            extra_env=self.extra_env,
            grace_seconds=self.grace_seconds,
            rank0_progress_port=self.progress_port,
        )
        try:
            plans = plan_pods(job, config_maps, service, opts)
        except PodSpecUnsupported as exc:
            self.errors.append(exc)
            return
        pods = {
            p.index: self.cluster.make_pod(job, p.index, ip=LOCALHOST, progress_port=p.progress_port)["metadata"][
                "name"
            ]
            for p in plans
        }
        gang = Gang(plans)
        gang.start()
        started = _now()
        run = _Run(namespace=ns, name=name, uid=uid, gang=gang, pod_names=pods, started_at=started)
        self.runs[uid] = run
        self.launched.append((ns, name, uid))
        for pod in pods.values():
            self._set_status(PODS, ns, pod, running_status(LOCALHOST, started_at=started))
        self._set_status(JOBS, ns, name, {"active": len(pods), "startTime": started})
        log.info("started %s/%s (uid %s): %d pods", ns, name, uid, len(pods))

    def _report_exits(self, run: _Run, *, write: bool = True) -> list[tuple[int, int]]:
        """Write the status of pods that ended since the last look; returns them."""
        ended = []
        for pod in run.gang.pods:
            code = pod.exit_code
            index = pod.plan.index
            if code is None or index in run.reported:
                continue
            run.reported[index] = code
            ended.append((index, code))
            if write:
                ended_status = terminated_status(code, started_at=run.started_at, message=pod.termination_message())
                self._set_status(PODS, run.namespace, run.pod_names[index], ended_status)
        return ended

    def _observe(self, run: _Run) -> None:
        if run.stop_deadline is not None:
            if run.alive and time.monotonic() > run.stop_deadline:
                run.gang.stop(grace=0)
            return
        ended = self._report_exits(run)
        for index, code in ended:
            if code not in (0, EXIT_STOPPED) and not run.failed:
                # podFailurePolicy FailJob: the Job fails at once and its other pods are terminated.
                run.failed = True
                pod = run.pod_names[index]
                message = (
                    f"Container trainer for pod {run.namespace}/{pod} failed with exit code {code} "
                    "matching FailJob rule at index 2"
                )
                now = _now()
                self._set_status(
                    JOBS,
                    run.namespace,
                    run.name,
                    {
                        "active": 0,
                        "failed": 1,
                        "conditions": [
                            {"type": "FailureTarget", "status": "True", "reason": REASON_POD_FAILURE_POLICY},
                            {
                                "type": "Failed",
                                "status": "True",
                                "reason": REASON_POD_FAILURE_POLICY,
                                "message": message,
                                "lastTransitionTime": now,
                            },
                        ],
                    },
                )
                self._begin_stop(run, delete_pods=False)
        all_ended = len(run.reported) == len(run.gang.pods)
        if not run.failed and not run.finished and all_ended and all(c == 0 for c in run.reported.values()):
            run.finished = True
            if self.complete_jobs:
                status = complete_job_status(len(run.gang.pods))
                status["active"] = 0
                self._set_status(JOBS, run.namespace, run.name, status)

    def _set_status(self, resource: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write a status; an object deleted meanwhile (the operator restarting the gang) is no error."""
        try:
            self.cluster.set_status(resource, namespace, name, status)
        except ApiError as exc:
            if exc.status != 404:
                raise
            log.info("%s %s/%s is gone; status not written", resource, namespace, name)

    def _begin_stop(self, run: _Run, *, delete_pods: bool) -> None:
        """SIGTERM every pod of the run now; SIGKILL what is left after the grace period."""
        run.delete_pods = delete_pods
        run.stop_deadline = time.monotonic() + self.grace_seconds
        for pod in run.gang.pods:
            pod.terminate()

    # -- for tests -------------------------------------------------------------------------------
    def current(self, name: str, namespace: str = "default") -> _Run | None:
        """The live run of a job (the newest incarnation)."""
        with self._lock:
            runs = [r for r in self.runs.values() if (r.namespace, r.name) == (namespace, name) and r.alive]
        return runs[-1] if runs else None

    def delete_pods(self, name: str, namespace: str = "default") -> list[str]:
        """Delete the kept pods of a job's stopped gangs (``keep_suspended_pods``); returns their names.

        What the Job controller does to a suspended Job's pods; its next resume starts a new gang.
        """
        deleted = []
        with self._lock:
            for uid, run in list(self.runs.items()):
                if (run.namespace, run.name) != (namespace, name) or run.alive or run.stop_deadline is None:
                    continue
                for pod in run.pod_names.values():
                    with contextlib.suppress(ApiError):
                        self.cluster.delete(PODS, run.namespace, pod)
                    deleted.append(pod)
                del self.runs[uid]
        return deleted

    def kill_worker(self, name: str, index: int, namespace: str = "default") -> list[int]:
        """SIGKILL the trainer processes of one pod (what an OOM kill does); returns their pids.

        The pod's main process is ``kadapt_trainer.launch``; its child is torchrun's agent and the
        agent's children are the trainer workers (each in a session of its own). Those are
        killed: the agent then reports its worker's death and the pod exits nonzero, as it would
        in a container. Killing the agent instead would orphan a worker that holds (or trains)
        on, outside every process group the kubelet stops.
        """
        import psutil

        run = self.current(name, namespace)
        if run is None:
            raise AssertionError(f"no running gang for {namespace}/{name}")
        pid = run.gang.pods[index].pid
        assert pid is not None
        agents = psutil.Process(pid).children()
        workers = [worker for agent in agents for worker in agent.children(recursive=True)]
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        return [worker.pid for worker in workers]

    def log_of(self, name: str, index: int) -> str:
        """The current log of pod ``<name>-<index>``."""
        path = self.run_dir / "logs" / f"{name}-{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""
