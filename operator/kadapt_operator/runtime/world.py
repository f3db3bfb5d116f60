"""What the operator process knows of the cluster, shared by every reconcile.

kopf's in-memory indices (AdaptationJobs, their batch Jobs, their pods), the objects this
process wrote itself (newer than the indices until the watch catches up), the API client,
per-job locks and the cache of validated specs. Nothing here decides anything: the steps
in :mod:`kadapt_operator.runtime.reconcile` read the world through it and write through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from kadapt_operator.api import AdaptationJob, AdaptationJobStatus
from kadapt_operator.ledger import JobSpend, NamespaceLedger
from kadapt_operator.metrics import OperatorMetrics
from kadapt_operator.runtime import events, peering
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.apply import controller_uid
from kadapt_operator.runtime.client import ADAPTATION_JOBS, ApiError, KubeClient
from kadapt_operator.runtime.options import RuntimeOptions
from kadapt_operator.runtime.stored import StoredMeta, meta_of, status_patch
from kadapt_operator.settings import OperatorSettings
from kadapt_operator.validation import SpecInvalid, validate_object

log = logging.getLogger("kadapt.operator")

AJ_INDEX = "kadapt_jobs"
JOB_INDEX = "kadapt_batch_jobs"
POD_INDEX = "kadapt_pods"
#: Parsed specs kept (one per live job generation is enough).
PARSE_CACHE_SIZE = 4096
DEFAULT_NAMESPACE = "default"

#: (namespace, name) of an AdaptationJob.
Key = tuple[str, str]


def utcnow() -> datetime:
    """The operator's clock (UTC): read once per reconcile, into its context."""
    return datetime.now(tz=UTC)


def _spec_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of the stored object that validation reads (no status, no server metadata noise)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "generation", "labels", "annotations") if k in meta
        },
        "spec": body.get("spec"),
    }


@dataclass
class Runtime:
    """What the handlers share: settings, the API client, per-job locks, index handles."""

    settings: OperatorSettings
    options: RuntimeOptions
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    client: KubeClient | None = None
    http: aiohttp.ClientSession | None = None
    indices: dict[str, Any] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    #: The last object this process wrote per job: newer than the index until the watch catches up.
    written: dict[Key, dict[str, Any]] = field(default_factory=dict)
    ticker: asyncio.Task[None] | None = None
    #: This replica's kopf peering identity (set at start-up, shared with kopf).
    identity: str | None = None
    #: Reconciles completed per job and trigger: what tests wait on before asserting that nothing changed.
    handled: Counter[tuple[Key, str]] = field(default_factory=Counter)
    #: Validated specs by (uid, generation): a pure function's results, so ticks stay cheap.
    parsed: OrderedDict[tuple[str, int], AdaptationJob | SpecInvalid] = field(default_factory=OrderedDict)
    #: Spend ledgers of budgeted namespaces as last read or written (see runtime/spend.py).
    ledgers: dict[str, NamespaceLedger] = field(default_factory=dict)
    #: Last known totals of jobs deleted since the last booking, by namespace (see runtime/spend.py).
    departed: dict[str, list[JobSpend]] = field(default_factory=dict)

    def api(self) -> KubeClient:
        """The API client kopf's login produced.

        Raises:
            kopf.TemporaryError: before the login handler ran (kopf retries).
        """
        if self.client is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        return self.client

    async def active(self) -> bool:
        """Whether this replica may do the periodic work: kopf's peering rule (always, standalone).

        kopf pauses the handlers of a replica that is not the highest-priority live peer, but
        not kadapt's own periodic task, which asks here before every round.
        """
        opts = self.options
        if opts.standalone or not opts.peering_name or self.identity is None:
            return True
        scopes: list[str | None] = [None] if opts.clusterwide else list(opts.namespaces)
        try:
            found = [await self.api().read_peering(ns, opts.peering_name) for ns in scopes]
        except (ApiError, kopf.TemporaryError) as exc:
            log.warning("peering %s not readable (%s): skipping this round of periodic work", opts.peering_name, exc)
            return False
        return peering.active_everywhere(found, identity=self.identity, priority=opts.priority, now=utcnow())

    def lock(self, key: Key) -> asyncio.Lock:
        """The per-job lock: one reconcile of a job at a time."""
        return self.locks.setdefault(key, asyncio.Lock())

    def indexed(self, name: str, key: Key) -> list[dict[str, Any]]:
        """The objects of one kopf index under ``key``."""
        index = self.indices.get(name)
        if index is None or key not in index:
            return []
        return list(index[key])

    def keys(self) -> list[Key]:
        """Every AdaptationJob this replica knows."""
        index = self.indices.get(AJ_INDEX)
        return [key for key in list(index.keys()) if index[key]] if index is not None else []

    def body(self, key: Key) -> dict[str, Any] | None:
        """The freshest AdaptationJob known: the index, or what this process just wrote."""
        stored = self.indexed(AJ_INDEX, key)
        body = stored[0] if stored else None
        mine = self.written.get(key)
        newer = body is None or meta_of(mine).resource_version_number > meta_of(body).resource_version_number
        if mine is not None and newer:
            if body is None:
                return None  # deleted (or not seen yet): never act on a stale copy
            return mine
        if mine is not None:
            self.written.pop(key, None)
        return body

    def bodies(self, namespace: str) -> list[dict[str, Any]]:
        """The freshest copy of every AdaptationJob of ``namespace`` this replica knows."""
        found = (self.body(key) for key in self.keys() if key[0] == namespace)
        return [body for body in found if body is not None]

    def batch_job(self, key: Key, owner_uid: str | None) -> dict[str, Any] | None:
        """The batch/v1 Job owned by this AdaptationJob, if it exists."""
        for job in self.indexed(JOB_INDEX, key):
            if owner_uid is not None and controller_uid(job) == owner_uid:
                return job
        return None

    def pods(self, key: Key) -> list[dict[str, Any]]:
        """Every pod labelled with this job's name (all incarnations)."""
        return self.indexed(POD_INDEX, key)

    async def write_status(
        self, key: Key, meta: StoredMeta, old: AdaptationJobStatus, new: AdaptationJobStatus
    ) -> None:
        """Patch what changed from ``old`` to ``new`` (nothing when nothing did); an Event per transition."""
        patch = status_patch(old, new)
        if patch is None:
            return
        result = await self.api().patch(ADAPTATION_JOBS, key[0], key[1], {"status": patch}, subresource="status")
        self.written[key] = result
        if "conditions" in patch:
            events.post_transitions(meta, st.transitions(old.conditions, new.conditions))
        if new.phase and new.phase != old.phase:
            self.metrics.set_job_phase(key[0], key[1], new.phase)

    async def annotate(self, key: Key, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """Merge-patch kadapt's bookkeeping annotations on the AdaptationJob."""
        result = await self.api().patch(
            ADAPTATION_JOBS, key[0], key[1], {"metadata": {"annotations": dict(annotations)}}
        )
        self.written[key] = result
        return result

    def parse(self, body: Mapping[str, Any]) -> AdaptationJob:
        """Validate the spec (which includes that it renders), once per (uid, generation).

        Raises:
            SpecInvalid: naming every field that is wrong.
        """
        meta = meta_of(body)
        key = (str(meta.uid), meta.generation or 0)
        cached = self.parsed.get(key)
        if cached is None:
            try:
                cached = validate_object(_spec_object(body))
            except SpecInvalid as exc:
                cached = exc
            self.parsed[key] = cached
            while len(self.parsed) > PARSE_CACHE_SIZE:
                self.parsed.popitem(last=False)
        if isinstance(cached, SpecInvalid):
            raise cached
        return cached

    def handled_count(self, key: Key, trigger: str | None = None) -> int:
        """How many reconciles of ``key`` (of one trigger, or all) have completed."""
        return sum(n for (k, t), n in list(self.handled.items()) if k == key and trigger in (None, t))

    def forget(self, key: Key) -> None:
        """Drop a deleted job's metrics series and per-job memory."""
        self.metrics.remove_job(*key)
        self.locks.pop(key, None)
        self.written.pop(key, None)
