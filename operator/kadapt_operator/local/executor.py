"""Run a rendered Indexed Job's pods as local processes, the way a kubelet would.

The input is the rendered objects themselves (the ``Job``, its ``ConfigMap`` and its headless
``Service`` as plain dicts, exactly what ``render()`` returns and ``kadapt render`` prints), so
what runs locally is what a cluster would run. Each pod becomes one process (its ``torchrun``),
with the translation a laptop needs and nothing more:

* completion index -> ``JOB_COMPLETION_INDEX`` (hence the node rank), through the same
  ``fieldRef`` the pod uses;
* ``$(VAR)`` references in command, args and env expanded as Kubernetes expands them;
* the pod DNS names behind the headless Service (``<job>-0.<job>``) -> ``127.0.0.1``, and the
  Service's ports -> free local ports (rendezvous shared by the gang, progress per pod, passed
  to the trainer as ``KADAPT_PROGRESS_PORT``);
* volumes -> folders under the run directory: ConfigMaps written out as files, ``pvc://``
  claims under ``<run-dir>/pvc/<claim>`` (``KADAPT_PVC_ROOT``), emptyDirs per pod; every
  ``mountPath`` prefix in command, args and env is rewritten to its folder.

Gang semantics follow the rendered Job's podFailurePolicy: one pod failing stops the others.
Stopping mimics the kubelet: SIGTERM to each pod's main process, then SIGKILL to its whole
process group after the grace period.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from kadapt_operator.k8s import COMPLETION_INDEX, container_gpus
from kadapt_trainer.config import EXIT_STOPPED, PVC_ROOT_ENV
from kadapt_trainer.errors import TERMINATION_LOG_ENV
from kadapt_trainer.ports import LOCALHOST, free_port

#: Env var the trainer reads to serve ``/progress`` on another port than the rendered one.
PROGRESS_PORT_ENV = "KADAPT_PROGRESS_PORT"
#: Name of the Service port whose number becomes each pod's progress port.
METRICS_PORT_NAME = "metrics"
#: Seconds between SIGTERM and SIGKILL when no terminationGracePeriodSeconds is rendered (Kubernetes' default).
DEFAULT_GRACE_SECONDS = 30.0
#: Where torch keeps JIT-compiled extensions (DeepSpeed's CPU comm op): shared across runs.
TORCH_EXTENSIONS_ENV = "TORCH_EXTENSIONS_DIR"
#: Log lines kept in memory per pod for failure reports.
LOG_TAIL_LINES = 40
#: The pod's terminationMessagePath, locally: a file in the pod's run folder (the kubelet's
#: /dev/termination-log does not exist here); the trainer finds it in KADAPT_TERMINATION_LOG.
TERMINATION_LOG_FILE = "termination-log"
#: Kubernetes keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


class PodSpecUnsupported(ValueError):
    """A rendered pod uses something that cannot run on this machine (a Secret volume, ...)."""


class GangPhase(StrEnum):
    """Where a gang of local pods stands."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references as Kubernetes does for command, args and env values.

    ``$(VAR)`` becomes the variable's value when it is defined and stays as written when it is
    not; ``$$`` is an escaped ``$`` (so ``$$(VAR)`` gives a literal ``$(VAR)``); any other ``$`` is
    kept.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(env[name] if name in env else text[i : close + 1])
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class ExecOptions:
    """How local pods are laid out and run.

    Attributes:
        run_dir: everything a run writes (config files, claims, logs, scratch) lives here.
        extra_env: set in every pod last (wins over the rendered env), e.g. for tests.
        inherit_env: start from this process's environment, as a container starts from its image's.
        grace_seconds: SIGTERM-to-SIGKILL delay; None uses the pod's terminationGracePeriodSeconds.
        rank0_progress_port: serve rank 0's ``/progress`` on this port instead of a free one (the
            end-to-end harness: the operator polls ``podIP:settings.progress_port``).
    """

    run_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: bool = True
    grace_seconds: float | None = None
    rank0_progress_port: int | None = None

    @property
    def pvc_root(self) -> Path:
        """Where ``pvc://<claim>/...`` lives locally: ``<run-dir>/pvc/<claim>/...``."""
        return self.run_dir / "pvc"

    @property
    def config_root(self) -> Path:
        return self.run_dir / "config"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"


@dataclass(frozen=True)
class PodPlan:
    """One pod, translated for this machine: what to execute and where."""

    name: str
    index: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    progress_port: int
    grace_seconds: float
    gpus: int = 0
    termination_log: Path | None = None


def _containers(job: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The pod spec and its single training container (the first one)."""
    pod_spec = job.get("spec", {}).get("template", {}).get("spec", {})
    containers = pod_spec.get("containers") or []
    if not containers:
        raise PodSpecUnsupported(f"Job {job.get('metadata', {}).get('name')!r} has no containers")
    return pod_spec, containers[0]


def _mount_folders(
    pod_spec: Mapping[str, Any],
    container: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, Any]],
    opts: ExecOptions,
    pod_dir: Path,
) -> dict[str, Path]:
    """mountPath -> local folder for each volumeMount; ConfigMap files are written out here."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        vol = volumes.get(mount["name"])
        if vol is None:
            raise PodSpecUnsupported(f"volumeMount {mount['name']!r} names no volume of the pod")
        if "configMap" in vol:
            cm_name = vol["configMap"]["name"]
            cm = config_maps.get(cm_name)
            if cm is None:
                raise PodSpecUnsupported(f"volume {vol['name']!r}: ConfigMap {cm_name!r} was not given")
            folder = opts.config_root / cm_name
        elif "persistentVolumeClaim" in vol:
            folder = opts.pvc_root / vol["persistentVolumeClaim"]["claimName"]
        elif "emptyDir" in vol:
            folder = pod_dir / "volumes" / vol["name"]
        elif "hostPath" in vol:
            folder = Path(vol["hostPath"]["path"])
        else:
            kinds = ", ".join(k for k in vol if k != "name")
            raise PodSpecUnsupported(
                f"volume {vol['name']!r} ({kinds}) cannot be mapped to a local folder; "
                "local runs support configMap, persistentVolumeClaim, emptyDir and hostPath"
            )
        sub = mount.get("subPath")
        mounts[mount["mountPath"].rstrip("/") or "/"] = folder / sub if sub else folder
    return mounts


class _Rewriter:
    """Rewrites pod-side paths, host names and ports to their local stand-ins in strings."""

    def __init__(self, mounts: Mapping[str, Path], hosts: Sequence[str], ports: Mapping[int, int]) -> None:
        self._mounts = sorted(mounts.items(), key=lambda kv: len(kv[0]), reverse=True)
        self._mount_re = (
            re.compile(r"(?<![\w./-])(" + "|".join(re.escape(m) for m, _ in self._mounts) + r")(?=/|$|[^\w.-])")
            if self._mounts
            else None
        )
        host_alt = "|".join(re.escape(h) for h in hosts)
        self._host_re = re.compile(r"(?<![\w.-])(" + host_alt + r")(?![\w-])") if hosts else None
        self._ports = ports
        port_alt = "|".join(str(p) for p in sorted(ports, key=lambda p: -p))
        # A port is a whole token, the value of a --flag=PORT, or the end of host:PORT.
        self._port_re = re.compile(r"(^|[=:])(" + port_alt + r")$") if ports else None
        self._folder = dict(self._mounts)

    def paths(self, text: str) -> str:
        """Mount paths (``/etc/kadapt/trainer.json``) -> local folders."""
        if self._mount_re is None:
            return text
        return self._mount_re.sub(lambda m: str(self._folder[m.group(1)]), text)

    def hosts(self, text: str) -> str:
        """Pod DNS names of the gang -> 127.0.0.1."""
        return self._host_re.sub(LOCALHOST, text) if self._host_re else text

    def port(self, text: str) -> str:
        """A token that is a Service port (or ends with ``:PORT``/``=PORT``) -> its local port."""
        if self._port_re is None:
            return text
        return self._port_re.sub(lambda m: m.group(1) + str(self._ports[int(m.group(2))]), text)

    def token(self, text: str) -> str:
        return self.port(self.hosts(self.paths(text)))


def _gang_hosts(job_name: str, service: Mapping[str, Any] | None, namespace: str, workers: int) -> list[str]:
    """DNS names that reach gang members: ``<job>-<i>.<svc>`` and its qualified forms."""
    svc = (service or {}).get("metadata", {}).get("name", job_name)
    out: list[str] = []
    for i in range(workers):
        base = f"{job_name}-{i}.{svc}"
        out += [f"{base}.{namespace}.svc.cluster.local", f"{base}.{namespace}.svc", f"{base}.{namespace}", base]
    return out


def _field_value(path: str, meta: Mapping[str, Any], node: str) -> str:
    """What a ``fieldRef.fieldPath`` reads for a local pod."""
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "status.podIP": LOCALHOST,
        "status.hostIP": LOCALHOST,
        "spec.nodeName": node,
        "spec.serviceAccountName": "default",
    }
    if path not in simple:
        raise PodSpecUnsupported(f"env fieldRef {path!r} is not supported locally")
    return str(simple[path])


def _env_value(
    item: Mapping[str, Any],
    env: Mapping[str, str],
    meta: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, Any]],
) -> str | None:
    """One ``env`` entry's value (None: an optional source that is absent)."""
    if "value" in item:
        return expand(str(item["value"]), env)
    source = item.get("valueFrom") or {}
    if "fieldRef" in source:
        return _field_value(source["fieldRef"]["fieldPath"], meta, socket.gethostname())
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        data = (config_maps.get(ref["name"]) or {}).get("data") or {}
        if ref["key"] in data:
            return str(data[ref["key"]])
        if ref.get("optional"):
            return None
        raise PodSpecUnsupported(f"env {item['name']}: ConfigMap {ref['name']!r} has no key {ref['key']!r}")
    if "secretKeyRef" in source:
        # No Secrets here: the user's own environment stands in for them.
        if item["name"] in env:
            return env[item["name"]]
        if source["secretKeyRef"].get("optional"):
            return None
        raise PodSpecUnsupported(
            f"env {item['name']} reads Secret {source['secretKeyRef']['name']!r}, which local runs do not have; "
            "export the variable instead"
        )
    if "resourceFieldRef" in source:
        return "0"
    return ""


def write_config_maps(config_maps: Iterable[Mapping[str, Any]], opts: ExecOptions) -> None:
    """Write every ConfigMap's keys as files, byte for byte.

    Their contents are not rewritten: the trainer config holds URIs (``pvc://`` resolves
    through ``KADAPT_PVC_ROOT``) and local paths that must keep meaning the host's files.
    """
    for cm in config_maps:
        folder = opts.config_root / cm["metadata"]["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in (cm.get("data") or {}).items():
            (folder / key).write_text(str(value))


def plan_pods(
    job: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, Any]],
    service: Mapping[str, Any] | None,
    opts: ExecOptions,
) -> list[PodPlan]:
    """Translate every pod of an Indexed Job into a local process plan.

    Writes the ConfigMaps and creates the volume folders as a side effect (the "pull and
    mount" step), so the plans can start at once.

    Raises:
        PodSpecUnsupported: for pod features that have no local meaning.
    """
    meta = job.get("metadata", {})
    job_name: str = meta["name"]
    namespace: str = meta.get("namespace", "default")
    spec = job.get("spec", {})
    workers = int(spec.get("completions") or spec.get("parallelism") or 1)
    pod_spec, container = _containers(job)
    grace = opts.grace_seconds
    if grace is None:
        grace = float(pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
    svc_ports = [int(p["port"]) for p in (service or {}).get("spec", {}).get("ports") or []]
    metrics_ports = {
        int(p["port"]) for p in (service or {}).get("spec", {}).get("ports") or [] if p.get("name") == METRICS_PORT_NAME
    }
    shared = {p: free_port() for p in svc_ports if p not in metrics_ports}
    hosts = _gang_hosts(job_name, service, namespace, workers)
    bin_dir = str(Path(sys.executable).parent)
    template_meta = job.get("spec", {}).get("template", {}).get("metadata", {})
    plans: list[PodPlan] = []
    opts.logs_dir.mkdir(parents=True, exist_ok=True)
    opts.pvc_root.mkdir(parents=True, exist_ok=True)
    for index in range(workers):
        pod_dir = opts.run_dir / "pods" / f"{job_name}-{index}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        progress_port = opts.rank0_progress_port if index == 0 and opts.rank0_progress_port else free_port()
        ports = {**shared, **{p: progress_port for p in metrics_ports}}
        mounts = _mount_folders(pod_spec, container, config_maps, opts, pod_dir)
        rewriter = _Rewriter(mounts, hosts, ports)
        if index == 0:
            used = {v["configMap"]["name"] for v in pod_spec.get("volumes") or [] if "configMap" in v}
            write_config_maps((config_maps[n] for n in sorted(used)), opts)
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
        pod_meta = {
            "name": f"{job_name}-{index}",
            "namespace": namespace,
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": {**(template_meta.get("annotations") or {}), COMPLETION_INDEX: str(index)},
        }
        env: dict[str, str] = dict(os.environ) if opts.inherit_env else {}
        env["HOSTNAME"] = f"{job_name}-{index}"
        rendered_env = container.get("env") or []
        for item in rendered_env:
            # Rewrite before expanding: a value built from another ($(HOME)/x) is local already.
            item = {**item, "value": rewriter.token(str(item["value"]))} if "value" in item else item
            value = _env_value(item, env, pod_meta, config_maps)
            if value is not None:
                env[item["name"]] = value
        if TORCH_EXTENSIONS_ENV not in {e["name"] for e in rendered_env}:
            # HOME is a per-pod scratch folder: keep DeepSpeed's JIT-built ops in the host's cache.
            env[TORCH_EXTENSIONS_ENV] = os.environ.get(TORCH_EXTENSIONS_ENV) or str(
                Path.home() / ".cache" / "torch_extensions"
            )
        env[PVC_ROOT_ENV] = str(opts.pvc_root)
        env[PROGRESS_PORT_ENV] = str(progress_port)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
        env["PYTHONUNBUFFERED"] = "1"
        termination_log = pod_dir / TERMINATION_LOG_FILE if container.get("terminationMessagePath") else None
        if termination_log is not None:
            env[TERMINATION_LOG_ENV] = str(termination_log)
        env.update(opts.extra_env)
        argv = [
            expand(rewriter.token(str(a)), env)
            for a in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        if not argv:
            raise PodSpecUnsupported(f"container {container.get('name')!r} has neither command nor args")
        workdir = container.get("workingDir")
        cwd = Path(rewriter.paths(workdir)) if workdir else pod_dir
        if not cwd.is_dir():
            cwd = pod_dir
        plans.append(
            PodPlan(
                name=f"{job_name}-{index}",
                index=index,
                argv=tuple(argv),
                env=env,
                cwd=cwd,
                log_path=opts.logs_dir / f"{job_name}-{index}.log",
                progress_port=progress_port,
                grace_seconds=grace,
                gpus=container_gpus(container),
                termination_log=termination_log,
            )
        )
    return plans


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        with path.open(errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


#: Set in every process of a local pod (inherited by torchrun's workers): how a kill finds them all.
POD_MARKER_ENV = "KADAPT_LOCAL_POD"


def processes_marked(marker: str) -> list[Any]:
    """The live processes whose environment carries ``POD_MARKER_ENV=marker`` (``psutil.Process``).

    A container's kill ends every process in it. Locally, a process group is not enough:
    torchrun starts each worker in a session of its own (``start_new_session``), and a worker
    whose agent died is re-parented away from the pod's tree. The environment is inherited,
    so it still names the pod.
    """
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(POD_MARKER_ENV) == marker:
                found.append(proc)
    return found


class LocalPod:
    """One running pod: its process, log, start and end times."""

    def __init__(self, plan: PodPlan) -> None:
        self.plan = plan
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.terminating = False
        #: Unique per start: every process of this run of the pod carries it (``POD_MARKER_ENV``).
        self.marker = ""

    def start(self) -> None:
        """Start the process in its own session, so signals reach only this pod's processes.

        An earlier run's log of the same pod is kept beside it as ``<pod>.log.previous``.
        """
        if self.plan.log_path.exists():
            self.plan.log_path.replace(self.plan.log_path.with_name(self.plan.log_path.name + ".previous"))
        if self.plan.termination_log is not None:
            self.plan.termination_log.unlink(missing_ok=True)  # a message belongs to one run of the pod
        log = self.plan.log_path.open("wb")
        self.marker = uuid.uuid4().hex
        try:
            self.process = subprocess.Popen(
                list(self.plan.argv),
                env={**self.plan.env, POD_MARKER_ENV: self.marker},
                cwd=self.plan.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.write(f"kadapt: cannot start {self.plan.argv[0]!r}: {exc.strerror}\n".encode())
            self.finished_at = datetime.now(UTC)
            raise
        finally:
            log.close()
        self.started_at = datetime.now(UTC)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has ended (negative: killed by that signal), else None."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None and self.finished_at is None:
            self.finished_at = datetime.now(UTC)
        return code

    @property
    def exit_code(self) -> int | None:
        """The exit code as Kubernetes reports it (128 + signal for a killed process)."""
        code = self.returncode
        return 128 - code if code is not None and code < 0 else code

    def terminate(self) -> None:
        """SIGTERM to the main process, as the kubelet does to a container's PID 1."""
        self.terminating = True
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to every process of the pod: its session and every process carrying its marker."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.kill_leftovers()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.returncode  # noqa: B018 - records finished_at

    def kill_leftovers(self) -> None:
        """SIGKILL the pod's processes that outlived its main process (torchrun workers)."""
        import psutil

        left = processes_marked(self.marker) if self.marker else []
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        return tail(self.plan.log_path, lines)

    def termination_message(self) -> str | None:
        """What the container wrote to its terminationMessagePath (as the kubelet reports it), if anything."""
        path = self.plan.termination_log
        if path is None or self.returncode is None:
            return None
        try:
            data = path.read_bytes()[:TERMINATION_MESSAGE_LIMIT]
        except OSError:
            return None
        text = data.decode("utf-8", "replace").strip()
        return text or None


@dataclass(frozen=True)
class GangResult:
    """How a gang ended: its phase, and for a failure which pod and why."""

    phase: GangPhase
    exit_codes: Mapping[int, int | None]
    failed_index: int | None = None
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.phase == GangPhase.SUCCEEDED


class Gang:
    """The pods of one Indexed Job, run together and stopped together."""

    def __init__(self, plans: Sequence[PodPlan]) -> None:
        self.pods = [LocalPod(p) for p in plans]
        self._stop_requested = False
        self._failed_index: int | None = None
        self._t0 = 0.0

    @property
    def rank0(self) -> LocalPod:
        return self.pods[0]

    def start(self) -> None:
        """Start every pod (index 0 first: it hosts the rendezvous)."""
        self._t0 = time.monotonic()
        for pod in self.pods:
            try:
                pod.start()
            except OSError:
                self._failed_index = pod.plan.index
                self.stop()
                raise

    def request_stop(self) -> None:
        """Ask every pod to stop (SIGTERM); the trainers checkpoint and exit."""
        self._stop_requested = True
        for pod in self.pods:
            pod.terminate()

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM every pod, wait up to the grace period, then SIGKILL what is left."""
        self.request_stop()
        limit = grace if grace is not None else max((p.plan.grace_seconds for p in self.pods), default=0.0)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and any(p.returncode is None for p in self.pods):
            time.sleep(0.1)
        for pod in self.pods:
            if pod.returncode is None:
                pod.kill()
            else:
                # The main process is gone; leave no orphaned workers behind.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pod.pid is not None:
                        os.killpg(pod.pid, signal.SIGKILL)
                pod.kill_leftovers()

    def poll(self) -> GangPhase:
        """Check the pods; on the first failure stop the rest (gang semantics)."""
        codes = [p.returncode for p in self.pods]
        if self._failed_index is None and not self._stop_requested:
            for pod, code in zip(self.pods, codes, strict=True):
                if code not in (None, 0):
                    self._failed_index = pod.plan.index
                    self.stop()
                    codes = [p.returncode for p in self.pods]
                    break
        if any(c is None for c in codes):
            return GangPhase.RUNNING
        if self._failed_index is not None:
            return GangPhase.FAILED
        if self._stop_requested:
            return GangPhase.SUCCEEDED if all(c == 0 for c in codes) else GangPhase.STOPPED
        return GangPhase.SUCCEEDED

    def result(self) -> GangResult:
        phase = self.poll()
        return GangResult(
            phase=phase,
            exit_codes={p.plan.index: p.exit_code for p in self.pods},
            failed_index=self._failed_index,
            wall_seconds=time.monotonic() - self._t0 if self._t0 else 0.0,
        )

    def wait(self, interval: float = 0.2, timeout: float | None = None) -> GangResult:
        """Block until every pod has ended (or ``timeout``: then stop them)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() == GangPhase.RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                self.stop()
                break
            time.sleep(interval)
        return self.result()

    def failing_pod(self) -> LocalPod | None:
        return None if self._failed_index is None else self.pods[self._failed_index]


def stopped_cleanly(code: int | None) -> bool:
    """True for the trainer's checkpoint-and-stop exit (143)."""
    return code == EXIT_STOPPED


Obj = Mapping[str, Any]


def split_objects(objects: Iterable[Obj]) -> tuple[Obj, dict[str, Obj], Obj | None]:
    """(Job, ConfigMaps by name, Service) from a list of rendered objects.

    Raises:
        PodSpecUnsupported: when no Job (or more than one) is among them.
    """
    jobs = [o for o in objects if o.get("kind") == "Job"]
    if len(jobs) != 1:
        raise PodSpecUnsupported(f"expected exactly one batch/v1 Job among the rendered objects, found {len(jobs)}")
    cms = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    svcs = [o for o in objects if o.get("kind") == "Service"]
    return jobs[0], cms, (svcs[0] if svcs else None)
