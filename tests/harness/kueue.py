"""A Kueue stand-in for the emulator: queue-labelled Jobs wait suspended until admitted.

Kueue's contract for ``batch/v1`` Jobs (its "external controllers" integration): a Job that
carries ``kueue.x-k8s.io/queue-name`` is suspended on create (Kueue's webhook) and stays
suspended until Kueue admits its Workload; then Kueue sets ``spec.suspend: false``. To preempt
it, Kueue sets ``spec.suspend: true`` again, and the Job controller deletes its pods. Any other
controller may suspend such a Job, but only Kueue may unsuspend it.

The emulator runs no webhooks or controllers, so this stand-in plays Kueue (and the Job
controller's reaction to suspension) in a background thread, and records every breach of the
contract by others::

    with KueueStandIn(cluster) as kueue:
        cluster.create(AJOBS, job_manifest("q", NS, queueName="gpus"))
        kueue.wait_queued(NS, "q")          # the Job exists and waits, suspended
        kueue.admit(NS, "q")                # Kueue admits it: spec.suspend -> false
        kueue.preempt(NS, "q")              # Kueue preempts it: suspended, pods deleted
        assert kueue.created_unsuspended == [] and kueue.fights == []

``created_unsuspended`` lists Jobs that were created with ``suspend: false`` (Kueue's webhook
had to suspend them; a well-behaved controller creates them suspended). ``fights`` lists every
time a Job that Kueue had not admitted was found unsuspended (someone else unsuspended it:
that bypasses quota and preemption). ``observed`` counts the Job versions the stand-in has
looked at, a positive signal that it has seen the latest state.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from kadapt_operator.labels import LABEL_QUEUE_NAME
from tests.harness.emulator import JOBS, PODS, ApiError, Cluster

#: Seconds between two looks at the Jobs (a controller's reaction time, not a test's wait).
POLL_SECONDS = 0.02

Key = tuple[str, str]


@dataclass
class _JobState:
    """What Kueue knows of one queued Job."""

    #: uid of the Job this state is about: a Job created again under the same name is a new workload.
    uid: str | None = None
    admitted: bool = False
    #: resourceVersion last acted on, so one version is judged once.
    seen_version: str | None = None
    #: Kueue has already put the Job into its queue (suspended it or found it suspended).
    queued: bool = False


@dataclass
class KueueStandIn:
    """Kueue for ``batch/v1`` Jobs with a queue label, plus the Job controller's pod deletion on suspend."""

    cluster: Cluster
    #: Delete a Job's pods when it becomes suspended, as the Job controller does.
    delete_pods_on_suspend: bool = True
    created_unsuspended: list[Key] = field(default_factory=list)
    fights: list[Key] = field(default_factory=list)
    admissions: list[Key] = field(default_factory=list)
    preemptions: list[Key] = field(default_factory=list)
    observed: int = 0
    _jobs: dict[Key, _JobState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> KueueStandIn:
        """Start watching Jobs."""
        self._thread = threading.Thread(target=self._run, name="kueue-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (Jobs keep their state)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> KueueStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what Kueue does --------------------------------------------------------------------
    def admit(self, namespace: str, name: str) -> None:
        """Admit the Job's Workload: Kueue unsuspends the Job."""
        job = self.cluster.wait_for(lambda: self.cluster.get(JOBS, namespace, name), message=f"Job {name}")
        assert job is not None
        with self._lock:
            state = self._jobs.setdefault((namespace, name), _JobState())
            if state.uid != job["metadata"].get("uid"):
                state.uid, state.seen_version, state.queued = job["metadata"].get("uid"), None, False
            state.admitted = True
            self.admissions.append((namespace, name))
        self._set_suspend(namespace, name, False)

    def preempt(self, namespace: str, name: str) -> None:
        """Preempt the admitted Job: Kueue suspends it and withdraws the admission."""
        with self._lock:
            state = self._jobs.setdefault((namespace, name), _JobState())
            state.admitted = False
            self.preemptions.append((namespace, name))
        self._set_suspend(namespace, name, True)

    def is_admitted(self, namespace: str, name: str) -> bool:
        """Whether Kueue currently admits the Job."""
        with self._lock:
            state = self._jobs.get((namespace, name))
            return bool(state and state.admitted)

    def wait_queued(self, namespace: str, name: str) -> dict[str, Any]:
        """Wait until Kueue holds the Job in its queue: it exists, unadmitted and suspended."""

        def queued() -> dict[str, Any] | None:
            job = self.cluster.get(JOBS, namespace, name)
            with self._lock:
                state = self._jobs.get((namespace, name))
                held = state is not None and state.queued and not state.admitted
            return job if job is not None and held and job["spec"].get("suspend") is True else None

        found = self.cluster.wait_for(queued, message=f"Job {name} queued in Kueue")
        assert found is not None
        return found

    def seen_after(self, count: int) -> bool:
        """Whether the stand-in has looked at more Job versions than ``count`` (a positive signal)."""
        with self._lock:
            return self.observed > count

    # -- the loop -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ApiError, RuntimeError, TimeoutError):
                for job in self.cluster.list(JOBS):
                    self._react(job)
            self._stop.wait(POLL_SECONDS)

    def _react(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        if not (meta.get("labels") or {}).get(LABEL_QUEUE_NAME):
            return
        key = (meta["namespace"], meta["name"])
        version = str(meta.get("resourceVersion"))
        suspended = job.get("spec", {}).get("suspend") is True
        resuspend = False
        uid = meta.get("uid")
        with self._lock:
            state = self._jobs.get(key)
            if state is not None and state.uid == uid and state.seen_version == version:
                return
            self.observed += 1
            if state is None or state.uid != uid:
                state = self._jobs[key] = _JobState(uid=uid)
                if not suspended:
                    self.created_unsuspended.append(key)
            elif not suspended and not state.admitted:
                self.fights.append(key)
            state.seen_version = version
            if not state.admitted:
                state.queued = True
                resuspend = not suspended
        if resuspend:
            self._set_suspend(*key, True)
        elif suspended and self.delete_pods_on_suspend:
            self._delete_pods(job)

    def _set_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        """Patch ``spec.suspend`` and play the Job controller's reaction (condition, pod deletion)."""
        with contextlib.suppress(ApiError):
            self.cluster.patch(JOBS, namespace, name, {"spec": {"suspend": suspend}})
            reason = "JobSuspended" if suspend else "JobResumed"
            condition = {"type": "Suspended", "status": "True" if suspend else "False", "reason": reason,
                         "message": "Job suspended" if suspend else "Job resumed"}
            self.cluster.set_status(JOBS, namespace, name, {"conditions": [condition], "active": 0})
        if suspend and self.delete_pods_on_suspend:
            job = self.cluster.get(JOBS, namespace, name)
            if job is not None:
                self._delete_pods(job)

    def _delete_pods(self, job: dict[str, Any]) -> None:
        """The Job controller deletes the pods of a suspended Job."""
        uid = job["metadata"].get("uid")
        ns = job["metadata"]["namespace"]
        for pod in self.cluster.list(PODS, ns):
            owners = pod["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                with contextlib.suppress(ApiError):
                    self.cluster.delete(PODS, ns, pod["metadata"]["name"])
