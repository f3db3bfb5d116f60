"""A Kubernetes API for tests: KMock's emulator over HTTP, plus the real kadapt operator.

Importable as a plain module (no pytest needed), so that the operator tests, the
end-to-end tests (whose "kubelet" runs pods locally) and the benchmarks share it::

    with Cluster() as cluster:                      # emulator on a free port, CRD loaded
        with cluster.operator(namespaces=["ns"]):   # the real kopf operator, over HTTP
            cluster.create(job_manifest)
            cluster.wait_for(lambda: cluster.get(JOBS, "ns", "name"))

KMock's emulator is a store over HTTP: it merges patches and streams watch events, but
assigns no uid, resourceVersion or generation and runs no controllers. ``Emulator`` adds
the metadata a real API server assigns (what kopf and ownerReferences rely on) and keeps
status and spec writes apart on resources with a status subresource. Tests play the Job
controller, the kubelet and the garbage collector explicitly (``set_status``,
``make_pod``, ``collect_garbage``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import itertools
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import dsl, enums, rendering
from kmock._internal.k8s import KubernetesError

from kadapt_operator.metrics import OperatorMetrics
from kadapt_operator.runtime.world import Runtime

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "adaptationjobs.kadapt.dev.yaml"

#: Resources as "group/version/plural" (core group: "v1/plural").
AJOBS = "kadapt.dev/v1alpha1/adaptationjobs"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
CONFIGMAPS = "v1/configmaps"
SERVICES = "v1/services"
EVENTS = "v1/events"
NAMESPACES = "v1/namespaces"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
LEASES = "coordination.k8s.io/v1/leases"
PEERINGS = "kopf.dev/v1/kopfpeerings"
CLUSTER_PEERINGS = "kopf.dev/v1/clusterkopfpeerings"

#: The namespace the test operator runs in (where namespace budgets keep their spend ledgers).
OPERATOR_NAMESPACE = "kadapt-system"

#: User-Agent of the harness's own requests, so the operator's requests can be told apart.
HARNESS_AGENT = "kadapt-test-harness"

_ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _namespaced(kind: str, *, status: bool = True) -> kmock.ResourceInfo:
    """A built-in namespaced kind that the operator reads and writes."""
    return kmock.ResourceInfo(
        kind=kind,
        singular=kind.lower(),
        namespaced=True,
        subresources={"status"} if status else set(),
        verbs=set(_ALL_VERBS),
    )


_RESOURCES: dict[str, kmock.ResourceInfo] = {
    AJOBS: kmock.ResourceInfo(
        kind="AdaptationJob",
        singular="adaptationjob",
        namespaced=True,
        shortnames={"aj"},
        categories={"kadapt"},
        subresources={"status"},
        verbs=set(_ALL_VERBS),
    ),
    JOBS: _namespaced("Job"),
    PODS: _namespaced("Pod"),
    CONFIGMAPS: _namespaced("ConfigMap", status=False),
    SERVICES: _namespaced("Service"),
    EVENTS: _namespaced("Event", status=False),
    NAMESPACES: kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list", "watch"}
    ),
    CRDS: kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs={"get", "list", "watch"},
    ),
}

T = TypeVar("T")

#: Operator settings for tests: fast polling and backoff, a known price.
TEST_SETTINGS: dict[str, Any] = {
    "trainer_image": "registry.example/kadapt-trainer:test",
    "gpu_prices": {"default": 3.6, "nvidia-a100": 7.2},
    "poll_interval_seconds": 0.2,
    "restart_backoff_seconds": 0.2,
    "restart_backoff_max_seconds": 1.0,
}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sees(node: Any, request: rendering.Request) -> bool:
    """Whether a reaction's filter chain matches ``request``, checked on the request alone.

    KMock answers "does this reaction see the request?" by replaying every request served
    so far through the filters, which makes each request cost O(requests so far). For plain
    filter chains (all of KMock's own fallbacks) the answer only depends on the request.
    """
    while True:
        if isinstance(node, dsl.Filter):
            if not node.criteria(request):
                return False
            node = node._source
        elif isinstance(node, dsl.Priority):
            node = node._source
        elif isinstance(node, dsl.Root):
            return True
        else:
            return request in node


class _LinearDispatch(kmock.RawHandler):
    """Request dispatch in O(reactions) instead of O(reactions x requests so far)."""

    __slots__ = ()

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        priorities = [payload.priorities for payload in self._payloads]
        width = max((len(p) for p in priorities), default=0)
        keys = [tuple(-x for x in p) + (0,) * (width - len(p)) for p in priorities]
        order = sorted(range(len(keys)), key=lambda i: keys[i])
        for payload in (self._payloads[i] for i in order):
            if not payload._disabled.is_set() and _sees(payload._source, request):
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        raise NotImplementedError("no reaction matches the request")


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator, _LinearDispatch):
    """KMock's emulator plus the metadata an API server assigns and status-subresource rules."""

    _rv: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    #: Requests served here rather than by KMock (which cannot parse them): (method, path, query).
    extra_requests: list[tuple[str, str, dict[str, str], str]] = attrs.field(factory=list, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # KMock 0.8 fails to parse the namespace collection (/api/v1/namespaces): serve it here.
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.method == "GET":
            query = dict(raw_request.query)
            self.extra_requests.append(
                (raw_request.method, raw_request.path, query, raw_request.headers.get("User-Agent", ""))
            )
            items = [
                o.raw
                for (r, _, _), o in self.objects.items()
                if str(r) == str(kmock.resource(NAMESPACES)) and not o.deleted
            ]
            if query.get("watch") not in ("true", "1"):
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "NamespaceList",
                        "metadata": {"resourceVersion": str(next(self._rv))},
                        "items": items,
                    }
                )
            resp = aiohttp.web.StreamResponse()
            resp.content_type = "application/json"
            await resp.prepare(raw_request)
            for item in items:
                await resp.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
            for _ in range(600):  # namespaces never change in tests; end the stream after a while
                transport = raw_request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.5)
            return resp
        return await super().__call__(raw_request)

    def _status_resources(self) -> set[str]:
        return {str(r) for r, info in self.resources.items() if "status" in getattr(info, "subresources", ())}

    def _current(self, request: rendering.Request) -> dict[str, Any] | None:
        key: Any = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            raw: dict[str, Any] = self.objects[key].raw
            return raw
        return None

    #: First time (monotonic) each (plural[/subresource], namespace, name) was created or patched.
    timeline: dict[tuple[str, str | None, str], float] = attrs.field(factory=dict, init=False)

    def _mark(self, request: rendering.Request, name: str | None) -> None:
        res = request.resource
        if res is None or not name:
            return
        what = f"{res.plural}/{request.subresource}" if request.subresource else str(res.plural)
        self.timeline.setdefault((what, request.namespace, name), time.monotonic())

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._mark(request, (request.data.get("metadata") or {}).get("name") or None)
        elif request.action == enums.action.UPDATE:
            self._mark(request, request.name)
        if request.resource is not None and isinstance(request.data, dict):
            data = request.data
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["generation"] = 1
                meta["resourceVersion"] = str(next(self._rv))
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace
            elif request.action == enums.action.UPDATE:
                current = self._current(request) or {}
                sent = meta.get("resourceVersion")
                stored = (current.get("metadata") or {}).get("resourceVersion")
                if sent and current and str(sent) != str(stored):
                    # An API server refuses a write based on an older read (optimistic concurrency).
                    raise KubernetesError(
                        status=409,
                        reason="Conflict",
                        message=f"the object has been modified (resourceVersion {sent} is not {stored}); "
                        "read it again and retry",
                    )
                has_status = self._resource_key(request) in self._status_resources()
                if has_status and request.subresource == "status":
                    for key in list(data):
                        if key not in ("status", "metadata"):
                            del data[key]
                elif has_status:
                    data.pop("status", None)
                if "spec" in data and request.subresource != "status" and data["spec"] != current.get("spec"):
                    meta["generation"] = int(current.get("metadata", {}).get("generation") or 1) + 1
                meta["resourceVersion"] = str(next(self._rv))
                # Never let a patch rewrite identity.
                meta.pop("uid", None)
                meta.pop("creationTimestamp", None)
        return await super()._handle(request)

    @staticmethod
    def _resource_key(request: rendering.Request) -> str:
        res = request.resource
        assert res is not None
        return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"

    def _KubernetesEmulator__get_objs(  # overrides KMock's name-mangled private method
        self, request: rendering.Request, strict: bool
    ) -> list[Any]:
        """Objects a request addresses: one dict lookup for a named object (KMock scans them all)."""
        if request.name is not None and (strict or request.namespace is not None):
            key: Any = (request.resource, request.namespace, request.name)
            return [self.objects[key]] if key in self.objects else []
        return [
            obj
            for (resource, namespace, _name), obj in self.objects.items()
            if resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or _name == request.name)
        ]

    def store(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Put an object straight into the store (no HTTP, no watch event): as if it pre-existed."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[kmock.resource(resource), meta.get("namespace"), meta["name"]] = obj
        return obj


class ApiError(RuntimeError):
    """An HTTP error from the emulator, with its status code."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def resource_path(
    resource: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    """The URL path of a resource, a collection or one object."""
    parts = resource.split("/")
    prefix = f"/api/{parts[0]}" if len(parts) == 2 else f"/apis/{parts[0]}/{parts[1]}"
    plural = parts[-1]
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


@dataclass(frozen=True)
class RequestRecord:
    """One API request the operator made, as the API server's authorizer would see it."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    #: metadata.name of the object sent (creations name it in the body, not the path).
    name: str | None = None

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def is_watch(self) -> bool:
        return self.params.get("watch") in ("true", "1")


@dataclass
class OperatorHandle:
    """A running operator (thread): its stop flag and the thread."""

    thread: threading.Thread
    stop_flag: threading.Event
    ready_flag: threading.Event
    #: The operator's shared state: its own metrics registry, and what it has handled.
    runtime: Runtime
    errors: list[BaseException] = field(default_factory=list)

    @property
    def metrics(self) -> OperatorMetrics:
        """This operator's own metrics (a fresh registry per operator)."""
        return self.runtime.metrics

    def handled(self, namespace: str, name: str, trigger: str | None = None) -> int:
        """Reconciles of one job this operator has completed (of one trigger: spec, children, tick)."""
        return self.runtime.handled_count((namespace, name), trigger)

    def wait_handled(
        self, namespace: str, name: str, more: int = 1, trigger: str | None = None, timeout: float = 20.0
    ) -> None:
        """Wait until the operator has completed ``more`` further reconciles of the job.

        The positive signal to wait for before asserting that something did *not* happen:
        the operator has looked at the job since (a tick re-reads everything).
        """
        target = self.handled(namespace, name, trigger) + more
        wait_for(
            lambda: self.handled(namespace, name, trigger) >= target,
            timeout=timeout, message=f"{more} more {trigger or 'any'} reconcile(s) of {namespace}/{name}",
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Ask kopf to stop, wait for the thread."""
        self.stop_flag.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("operator did not stop in time")


class Cluster:
    """An emulated Kubernetes API on a local port, driven synchronously from tests."""

    def __init__(self, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.emulator = Emulator()
        self._namespaces = namespaces
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kmock-emulator", daemon=True)
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="kadapt-emulator-")
        self.url = ""
        self.kubeconfig = Path(self._tmp.name) / "kubeconfig"

    # -- lifecycle ---------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator) as server:
            self.url = str(server.url).rstrip("/")
            for name, info in _RESOURCES.items():
                self.emulator.resources[name] = info
            crd = yaml.safe_load(CRD_FILE.read_text())
            self.emulator.store(CRDS, crd)
            for ns in self._namespaces:
                self.emulator.store(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            self._started.set()
            await self._stopping.wait()

    def start(self) -> Cluster:
        """Start the emulator and write a kubeconfig pointing at it."""
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the emulator did not start")
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "emulator",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {"cluster": "emulator", "user": "tester", "namespace": self._namespaces[0]},
                        }
                    ],
                }
            )
        )
        return self

    def close(self) -> None:
        """Stop the emulator."""
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._tmp.cleanup()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def in_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator's loop (its object store is not thread-safe)."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    # -- HTTP client (what kubectl would do) ---------------------------------
    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/merge-patch+json"
    ) -> Any:
        """One HTTP request to the emulator; JSON in and out.

        Raises:
            ApiError: on any HTTP error status.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("User-Agent", HARNESS_AGENT)
        if data is not None:
            req.add_header("Content-Type", "application/json" if method == "POST" else content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode()) from None
        return json.loads(text) if text else None

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object over HTTP (as ``kubectl create`` would)."""
        ns = obj.get("metadata", {}).get("namespace")
        result: dict[str, Any] = self.request("POST", resource_path(resource, ns), obj)
        return result

    def patch(
        self, resource: str, namespace: str | None, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch an object over HTTP."""
        result: dict[str, Any] = self.request("PATCH", resource_path(resource, namespace, name, subresource), patch)
        return result

    def set_status(self, resource: str, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write ``status`` through the status subresource (as a controller or the kubelet would)."""
        return self.patch(resource, namespace, name, {"status": status}, subresource="status")

    def delete(self, resource: str, namespace: str | None, name: str) -> None:
        """Delete an object over HTTP."""
        self.request("DELETE", resource_path(resource, namespace, name))

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object, or None (read straight from the store)."""

        def read() -> dict[str, Any] | None:
            key = (kmock.resource(resource), namespace, name)
            if key not in self.emulator.objects or self.emulator.objects[key].deleted:
                return None
            return json.loads(json.dumps(self.emulator.objects[key].raw))

        return self.in_loop(read)

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects of a resource (optionally one namespace), from the store."""

        def read() -> list[dict[str, Any]]:
            res = kmock.resource(resource)
            out = []
            for (r, ns, _name), obj in self.emulator.objects.items():
                if r == res and not obj.deleted and (namespace is None or ns == namespace):
                    out.append(json.loads(json.dumps(obj.raw)))
            return out

        return self.in_loop(read)

    def store(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Preload an object into the store, bypassing HTTP, admission and watch events."""
        return self.in_loop(lambda: self.emulator.store(resource, obj))

    # -- playing the controllers the emulator lacks ---------------------------
    def collect_garbage(self) -> builtins.list[tuple[str, str | None, str]]:
        """Delete objects whose owners are gone (the garbage collector's job), over HTTP."""
        uids = {o["metadata"].get("uid") for res in (AJOBS, JOBS) for o in self.list(res)}
        deleted = []
        for res in (JOBS, PODS, CONFIGMAPS, SERVICES):
            for obj in self.list(res):
                owners = obj["metadata"].get("ownerReferences") or []
                if owners and not any(o.get("uid") in uids for o in owners):
                    meta = obj["metadata"]
                    with contextlib.suppress(ApiError):
                        self.delete(res, meta.get("namespace"), meta["name"])
                    deleted.append((res, meta.get("namespace"), meta["name"]))
        return deleted

    def make_pod(
        self,
        job: dict[str, Any],
        index: int,
        *,
        ip: str | None = None,
        phase: str = "Pending",
        progress_port: int | None = None,
    ) -> dict[str, Any]:
        """Create the pod of completion ``index`` of a batch/v1 Job (the Job controller's job).

        ``progress_port`` annotates where the pod serves /progress when several pods share one
        address (local runs); the operator then polls that port instead of its setting.
        """
        meta = job["metadata"]
        template = job["spec"]["template"]
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
        labels["batch.kubernetes.io/controller-uid"] = meta["uid"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{index}-{uuid.uuid4().hex[:5]}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {
                    "batch.kubernetes.io/job-completion-index": str(index),
                    **({"kadapt.dev/progress-port": str(progress_port)} if progress_port else {}),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        created = self.create(PODS, pod)
        status: dict[str, Any] = {"phase": phase}
        if ip:
            status["podIP"] = ip
        self.set_status(PODS, meta["namespace"], created["metadata"]["name"], status)
        return self.get(PODS, meta["namespace"], created["metadata"]["name"]) or created

    # -- what the operator did ---------------------------------------------------
    def operator_requests(self) -> builtins.list[RequestRecord]:
        """Every API request not made by this harness (i.e. by the operator)."""

        def read() -> list[RequestRecord]:
            out = []
            for req in list(self.emulator._requests):
                if req.headers.get("User-Agent", "") == HARNESS_AGENT:
                    continue
                sent = req.data.get("metadata", {}).get("name") if isinstance(req.data, dict) else None
                out.append(
                    RequestRecord(str(req.method.value).upper(), req.url.path, tuple(req.url.query.items()), sent)
                )
            for method, path, query, agent in self.emulator.extra_requests:
                if agent != HARNESS_AGENT:
                    out.append(RequestRecord(method.upper(), path, tuple(query.items())))
            return out

        return self.in_loop(read)

    # -- the operator --------------------------------------------------------
    @contextlib.contextmanager
    def operator(
        self,
        namespaces: builtins.list[str] | None = None,
        settings_overrides: dict[str, Any] | None = None,
        *,
        fast: bool = True,
        ready_timeout: float = 30.0,
        liveness: str | None = None,
        metrics: OperatorMetrics | None = None,
        operator_namespace: str = OPERATOR_NAMESPACE,
    ) -> Iterator[OperatorHandle]:
        """Run the real kadapt operator (kopf) in a thread against this emulator, over HTTP.

        ``metrics``: the registry it records into (a test that serves one passes it); a fresh one when None.
        ``operator_namespace``: where it runs (its namespace budgets' spend ledgers live there).
        """
        handle = start_operator(
            self.kubeconfig,
            namespaces or list(self._namespaces),
            settings_overrides or {},
            fast=fast,
            liveness=liveness,
            metrics=metrics,
            operator_namespace=operator_namespace,
        )
        try:
            if not handle.ready_flag.wait(ready_timeout):
                raise RuntimeError(f"the operator did not get ready: {handle.errors}")
            yield handle
        finally:
            handle.stop()
        if handle.errors:
            raise RuntimeError(f"the operator failed: {handle.errors!r}")

    def wait_for(
        self, predicate: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05, message: str = ""
    ) -> T:
        """:func:`wait_for`, polling the emulator more often (it answers in microseconds)."""
        return wait_for(predicate, timeout=timeout, interval=interval, message=message)


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.2, message: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``message`` after ``timeout``.

    The one wait of the tests (``Cluster.wait_for`` is this, with a shorter poll interval):
    tests wait on a state, never on time.
    """
    what = message or repr(predicate)
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})")


def start_operator(
    kubeconfig: Path,
    namespaces: list[str],
    settings_overrides: dict[str, Any],
    *,
    fast: bool = True,
    liveness: str | None = None,
    metrics: OperatorMetrics | None = None,
    operator_namespace: str = OPERATOR_NAMESPACE,
    peering: tuple[str, int] | None = None,
    identity: str | None = None,
) -> OperatorHandle:
    """Start the kadapt operator in a thread; stop it with ``handle.stop()``.

    ``peering``: (peering name, priority) to run as one of several peered replicas, with
    ``identity`` as its peer id; standalone when None.
    """
    from kadapt_operator.runtime.options import RuntimeOptions
    from kadapt_operator.runtime.startup import run_operator
    from kadapt_operator.settings import OperatorSettings

    settings = OperatorSettings.model_validate({**TEST_SETTINGS, **settings_overrides})
    stop_flag = threading.Event()
    ready_flag = threading.Event()
    options = RuntimeOptions(
        namespaces=tuple(namespaces),
        clusterwide=False,
        standalone=peering is None,
        peering_name=peering[0] if peering else None,
        priority=peering[1] if peering else 0,
        kubeconfig=kubeconfig,
        fast=fast,
        liveness_endpoint=liveness,
        operator_namespace=operator_namespace,
    )
    # A fresh metrics registry per operator: no test sees another operator's counts.
    runtime = Runtime(settings=settings, options=options, metrics=metrics or OperatorMetrics(), identity=identity)
    handle = OperatorHandle(thread=threading.Thread(), stop_flag=stop_flag, ready_flag=ready_flag, runtime=runtime)

    def target() -> None:
        try:
            asyncio.run(run_operator(settings, options, stop_flag=stop_flag, ready_flag=ready_flag, runtime=runtime))
        except BaseException as exc:  # reported to the test through handle.errors
            handle.errors.append(exc)
            ready_flag.set()

    handle.thread = threading.Thread(target=target, name="kadapt-operator", daemon=True)
    handle.thread.start()
    return handle


def job_manifest(name: str, namespace: str = "default", **spec_overrides: Any) -> dict[str, Any]:
    """A small valid AdaptationJob manifest for tests."""
    spec: dict[str, Any] = {
        "model": {"uri": "pvc://models/tiny-bert"},
        "dataset": {"uri": "pvc://data/reviews.jsonl"},
        "output": {"uri": "pvc://out/" + name},
        "strategy": {"type": "lora"},
        "training": {"globalBatchSize": 8, "microBatchSize": 4},
        "resources": {"workers": 2, "gpusPerWorker": 1},
    }
    for key, value in spec_overrides.items():
        spec[key] = value
    return {
        "apiVersion": "kadapt.dev/v1alpha1",
        "kind": "AdaptationJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# -- pod states, as the kubelet would write them ---------------------------------------------


def running_status(ip: str = "127.0.0.1", started_at: str | None = None) -> dict[str, Any]:
    """A pod whose trainer container runs."""
    started = started_at or _now()
    return {
        "phase": "Running",
        "podIP": ip,
        "startTime": started,
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "trainer", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": started}}}
        ],
    }


def terminated_status(
    exit_code: int, *, started_at: str | None = None, disrupted: bool = False, message: str | None = None
) -> dict[str, Any]:
    """A pod whose trainer exited with ``exit_code`` (optionally marked DisruptionTarget first).

    ``message`` is what the container wrote to its ``terminationMessagePath``: the kubelet
    reports it in ``state.terminated.message``, where the operator reads a bad input's cause.
    """
    now = _now()
    status: dict[str, Any] = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "startTime": started_at or now,
        "containerStatuses": [
            {
                "name": "trainer",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "startedAt": started_at or now,
                        "finishedAt": now,
                        **({"message": message} if message else {}),
                    }
                },
            }
        ],
        "conditions": [{"type": "PodScheduled", "status": "True"}],
    }
    if disrupted:
        status["conditions"].append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": "preempted by a higher priority pod",
            }
        )
    return status


def waiting_status(reason: str, message: str = "") -> dict[str, Any]:
    """A scheduled pod whose container cannot start (e.g. ErrImagePull)."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            {
                "name": "trainer",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


def unschedulable_status(message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.") -> dict[str, Any]:
    """A pod the scheduler cannot place."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
    }


def complete_job_status(completions: int) -> dict[str, Any]:
    """What the Job controller writes when every index succeeded."""
    now = _now()
    return {
        "succeeded": completions,
        "completionTime": now,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}],
    }
