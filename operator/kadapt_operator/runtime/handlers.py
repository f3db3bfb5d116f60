"""kopf handlers: thin wiring from kopf's events to :func:`reconcile.reconcile`.

Each handler names the trigger and the job's key and hands over; what a reconcile does is
in :mod:`kadapt_operator.runtime.reconcile` (the steps) and
:mod:`kadapt_operator.runtime.decide` (the pure decisions).

There is no finalizer: children are owned by the job and garbage-collected with it; the
delete handler is optional and only drops metrics. The periodic work (progress polling,
cost, budget, deadline, backoff, TTL) runs in one operator-wide task rather than kopf
timers, which would put a finalizer on every job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from kadapt_operator.api import PLURAL
from kadapt_operator.labels import LABEL_JOB_NAME
from kadapt_operator.runtime import spend
from kadapt_operator.runtime.client import ApiError, KubeClient
from kadapt_operator.runtime.decide import Trigger
from kadapt_operator.runtime.login import client_configuration, connection_info
from kadapt_operator.runtime.reconcile import reconcile, tick_forever
from kadapt_operator.runtime.world import AJ_INDEX, DEFAULT_NAMESPACE, JOB_INDEX, POD_INDEX, Key, Runtime
from kadapt_trainer.config import API_GROUP, API_VERSION

log = logging.getLogger("kadapt.operator")


def _plain(obj: Any) -> Any:
    """Deep copy of a kopf body/view as plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def ensure_ticker(rt: Runtime) -> None:
    """Start the periodic task from a handler's context (kopf's Event queue lives in it)."""
    if rt.ticker is None or rt.ticker.done():
        rt.ticker = asyncio.get_running_loop().create_task(tick_forever(rt), name="kadapt-ticker")


def _keys_of(namespace: str | None, labels: Mapping[str, str]) -> Key | None:
    name = labels.get(LABEL_JOB_NAME)
    return (namespace or DEFAULT_NAMESPACE, name) if name else None


#: Jobs and pods of kadapt: they carry the job-name label.
SELECTOR = {LABEL_JOB_NAME: kopf.PRESENT}


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """A fresh kopf registry with kadapt's handlers bound to ``rt``."""
    registry = kopf.OperatorRegistry()
    register_lifecycle(registry, rt)
    register_indices(registry)
    register_triggers(registry, rt)
    return registry


def register_lifecycle(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """Login, start-up, the liveness probe and clean-up."""

    @kopf.on.login(registry=registry)
    async def login_handler(**_: Any) -> kopf.ConnectionInfo:
        """One login for kopf and for kadapt's client: the kubernetes client's configuration."""
        configuration = await asyncio.to_thread(client_configuration, rt.options)
        old, rt.client = rt.client, KubeClient(configuration)
        if old is not None:
            await old.close()
        return connection_info(configuration)

    @kopf.on.startup(registry=registry)
    async def startup(**kwargs: Any) -> None:
        rt.indices = {name: kwargs[name] for name in (AJ_INDEX, JOB_INDEX, POD_INDEX)}
        rt.http = aiohttp.ClientSession()
        rt.metrics.set_currency(rt.settings.currency)

    @kopf.on.probe(id="jobs", registry=registry)
    async def jobs_known(**_: Any) -> int:
        """Liveness detail: how many AdaptationJobs this replica tracks."""
        index = rt.indices.get(AJ_INDEX)
        return len(index) if index is not None else 0

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if rt.ticker is not None:
            rt.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rt.ticker
        if rt.http is not None:
            await rt.http.close()
        if rt.client is not None:
            await rt.client.close()


def register_indices(registry: kopf.OperatorRegistry) -> None:
    """kopf's in-memory indices of AdaptationJobs, their Jobs and their pods, by (namespace, name)."""

    @kopf.index(API_GROUP, API_VERSION, PLURAL, id=AJ_INDEX, registry=registry)
    async def kadapt_jobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
        return {(namespace or DEFAULT_NAMESPACE, name): _plain(body)}

    @kopf.index("batch", "v1", "jobs", labels=SELECTOR, id=JOB_INDEX, registry=registry)
    async def kadapt_batch_jobs(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[Key, Any]:
        key = _keys_of(namespace, labels)
        return {key: _plain(body)} if key else {}

    @kopf.index("v1", "pods", labels=SELECTOR, id=POD_INDEX, registry=registry)
    async def kadapt_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
        key = _keys_of(namespace, labels)
        return {key: _plain(body)} if key else {}


def register_triggers(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """Spec changes, deletions and child events: each names its trigger and hands over to reconcile."""

    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL, registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION, PLURAL, registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec", registry=registry)
    async def spec_changed(namespace: str | None, name: str, **_: Any) -> None:
        """An immutable change past admission is judged by the reconcile (``SpecApplied``), not here."""
        ensure_ticker(rt)
        try:
            await reconcile(rt, (namespace or DEFAULT_NAMESPACE, name), Trigger.SPEC)
        except ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=2) from exc

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def forget(namespace: str | None, name: str, type: str, body: kopf.Body, **_: Any) -> None:
        """A deleted job: drop its metrics series and per-job memory (no finalizer needed).

        Its last cost totals wait for the next booking into its namespace's spend ledger.
        ``on.delete(optional=True)`` runs only for objects held by a finalizer; the watch's
        DELETED event is what a plain deletion produces.
        """
        if type != "DELETED":
            return
        spend.remember_departed(rt, _plain(body))
        rt.forget((namespace or DEFAULT_NAMESPACE, name))

    @kopf.on.event("batch", "v1", "jobs", labels=SELECTOR, registry=registry)
    @kopf.on.event("v1", "pods", labels=SELECTOR, registry=registry)
    async def child_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        key = _keys_of(namespace, labels)
        if key is None:
            return
        ensure_ticker(rt)
        try:
            await reconcile(rt, key, Trigger.CHILDREN)
        except ApiError as exc:
            log.warning("status of %s/%s not updated: %s", key[0], key[1], exc)
