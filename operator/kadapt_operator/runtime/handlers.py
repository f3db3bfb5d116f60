"""kopf handlers: thin wiring from events to one level-triggered ``converge``.

Every trigger (an AdaptationJob created, resumed after a restart or its spec changed; an
event on its Job or pods; the periodic tick) runs the same steps under a per-job lock:
body -> typed spec -> pure render -> at most one apply -> observe the children -> act
(restart, fail, suspend) -> patch the status only when it changed -> one Event per
transition. The state it needs lives in the API server (status, a few ``kadapt.dev/``
annotations), never in memory: a restarted operator picks up where the last one stopped.

There is no finalizer: children are owned by the job and garbage-collected with it; the
delete handler is optional and only drops metrics. The periodic work (progress polling,
cost, budget, deadline, backoff, TTL) runs in one operator-wide task rather than kopf
timers, which would put a finalizer on every job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import aiohttp
import kopf

from kadapt_operator import cost as costing
from kadapt_operator.api import MUTABLE_SPEC_FIELDS, PLURAL, AdaptationJob
from kadapt_operator.labels import LABEL_JOB_NAME
from kadapt_operator.metrics import (
    METRICS,
    RESTART_DISRUPTION,
    RESTART_FAILURE,
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    OperatorMetrics,
    UsageKey,
    sample_from_body,
)
from kadapt_operator.render import render
from kadapt_operator.runtime import events, progress
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.apply import ChildConflict, apply_all
from kadapt_operator.runtime.kube import ADAPTATION_JOBS, JOBS, ApiError, KubeClient
from kadapt_operator.runtime.startup import PREFIX, RuntimeOptions, login
from kadapt_operator.settings import OperatorSettings
from kadapt_operator.validation import SpecInvalid, validate_object
from kadapt_trainer.config import API_GROUP, API_VERSION

log = logging.getLogger("kadapt.operator")

#: uid of the Job incarnation whose failure was already handled (counted once, even after restarts).
ANN_HANDLED_JOB = f"{PREFIX}/handled-job-uid"
#: When the gang may be recreated after a failure (exponential backoff), RFC 3339.
ANN_RESTART_AFTER = f"{PREFIX}/restart-after"

AJ_INDEX = "kadapt_jobs"
JOB_INDEX = "kadapt_batch_jobs"
POD_INDEX = "kadapt_pods"
#: How many jobs one tick works on at once (each may poll a trainer).
TICK_CONCURRENCY = 16
#: Parsed specs kept (one per live job generation is enough).
PARSE_CACHE_SIZE = 4096

Key = tuple[str, str]
DEFAULT_NAMESPACE = "default"


class Trigger(StrEnum):
    """What woke ``converge`` up: decides which optional steps run."""

    SPEC = "spec"
    CHILDREN = "children"
    TICK = "tick"


def utcnow() -> datetime:
    """The operator's clock (UTC)."""
    return datetime.now(tz=UTC)


def _rv(body: Mapping[str, Any] | None) -> int:
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _plain(obj: Any) -> Any:
    """Deep copy of a kopf body/view as plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


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
    metrics: OperatorMetrics = field(default_factory=lambda: METRICS)
    client: KubeClient | None = None
    http: aiohttp.ClientSession | None = None
    indices: dict[str, Any] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    #: The last object this process wrote per job: newer than the index until the watch catches up.
    written: dict[Key, dict[str, Any]] = field(default_factory=dict)
    ticker: asyncio.Task[None] | None = None
    #: Validated specs by (uid, generation): a pure function's results, so ticks stay cheap.
    parsed: OrderedDict[tuple[str, int], AdaptationJob | SpecInvalid] = field(default_factory=OrderedDict)

    # -- plumbing ----------------------------------------------------------------
    def api(self) -> KubeClient:
        if self.client is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        return self.client

    def lock(self, key: Key) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def _index(self, name: str, key: Key) -> list[dict[str, Any]]:
        index = self.indices.get(name)
        if index is None or key not in index:
            return []
        return [v for v in index[key]]

    def body(self, key: Key) -> dict[str, Any] | None:
        """The freshest AdaptationJob known: the index, or what this process just wrote."""
        stored = self._index(AJ_INDEX, key)
        body = stored[0] if stored else None
        mine = self.written.get(key)
        if mine is not None and (body is None or _rv(mine) > _rv(body)):
            if body is None:
                return None  # deleted (or not seen yet): never act on a stale copy
            return mine
        if mine is not None:
            self.written.pop(key, None)
        return body

    def namespace_spent(self, namespace: str) -> float:
        """Money spent so far by every AdaptationJob of ``namespace`` (from the watched index)."""
        index = self.indices.get(AJ_INDEX)
        if index is None:
            return 0.0
        bodies = [body for key in list(index.keys()) if key[0] == namespace for body in index[key]]
        return costing.namespace_spent(bodies, namespace)

    def batch_job(self, key: Key, owner_uid: str | None) -> dict[str, Any] | None:
        """The batch/v1 Job owned by this AdaptationJob, if it exists."""
        for job in self._index(JOB_INDEX, key):
            refs = job.get("metadata", {}).get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs):
                return job
        return None

    def pods(self, key: Key) -> list[dict[str, Any]]:
        """Every pod labelled with this job's name (all incarnations)."""
        return self._index(POD_INDEX, key)

    async def write(self, key: Key, body: Mapping[str, Any], new_status: Mapping[str, Any]) -> dict[str, Any]:
        """Patch the status keys that changed; post an Event per condition transition."""
        old = body.get("status") or {}
        patch = st.status_patch(old, new_status)
        if not patch:
            return dict(body)
        result = await self.api().patch(ADAPTATION_JOBS, key[0], key[1], {"status": patch}, subresource="status")
        self.written[key] = result
        if "conditions" in patch:
            events.post_transitions(body, st.transitions(old, patch["conditions"]))
        phase = patch.get("phase")
        if phase:
            self.metrics.set_job_phase(key[0], key[1], phase)
        return result

    async def annotate(self, key: Key, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """Merge-patch kadapt's bookkeeping annotations on the AdaptationJob."""
        result = await self.api().patch(
            ADAPTATION_JOBS, key[0], key[1], {"metadata": {"annotations": dict(annotations)}}
        )
        self.written[key] = result
        return result

    def parse(self, body: Mapping[str, Any]) -> AdaptationJob:
        """Validate the spec and check that it renders, once per (uid, generation).

        Raises:
            SpecInvalid: naming every field that is wrong.
        """
        meta = body.get("metadata") or {}
        key = (str(meta.get("uid")), int(meta.get("generation") or 0))
        cached = self.parsed.get(key)
        if cached is None:
            try:
                job = validate_object(_spec_object(body))
                render(job, self.settings)
                cached = job
            except SpecInvalid as exc:
                cached = exc
            self.parsed[key] = cached
            while len(self.parsed) > PARSE_CACHE_SIZE:
                self.parsed.popitem(last=False)
        if isinstance(cached, SpecInvalid):
            raise cached
        return cached

    # -- the one reconcile -------------------------------------------------------------------
    async def converge(self, key: Key, trigger: Trigger) -> None:
        """Bring one AdaptationJob's children and status in line with its spec and its pods."""
        async with self.lock(key):
            with self.metrics.reconcile(str(trigger)):
                body = self.body(key)
                if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                    return
                await self._converge(key, body, trigger)

    async def _converge(self, key: Key, body: dict[str, Any], trigger: Trigger) -> None:
        now = utcnow()
        meta = body.get("metadata") or {}
        status: dict[str, Any] = dict(body.get("status") or {})
        generation = meta.get("generation")
        try:
            job = self.parse(body)
        except SpecInvalid as exc:
            await self._fail_invalid(key, body, exc, now)
            if trigger == Trigger.TICK:  # an invalid job expires too, if its TTL at least is readable
                ttl = ((body.get("spec") or {}).get("runPolicy") or {}).get("ttlSecondsAfterFinished")
                await self._expire(key, ttl if isinstance(ttl, int) and ttl >= 0 else None, status, now)
            return
        if status.get("phase") in st.TERMINAL_PHASES:
            if trigger == Trigger.TICK:
                await self._expire(key, job.spec.run_policy.ttl_seconds_after_finished, status, now)
            return

        annotations = meta.get("annotations") or {}
        uid = meta.get("uid")
        batch = self.batch_job(key, uid)
        handled = annotations.get(ANN_HANDLED_JOB)
        if batch is not None and batch["metadata"].get("uid") == handled:
            batch = None  # the failed incarnation, being deleted: not the gang any more
        restart_after = st.parse_time(annotations.get(ANN_RESTART_AFTER))
        price = costing.price_for(self.settings, job.spec.resources.gpu_type)
        new: dict[str, Any] = {"observedGeneration": generation}
        updates: list[st.CondUpdate] = []

        # Cost: accrue on every tick and before pods are stopped; decide the budget from it.
        cost_status = dict(status.get("cost") or {})
        pod_dicts = self.pods(key)
        intervals = [p for p in (costing.pod_interval(d) for d in pod_dicts) if p is not None]
        if trigger == Trigger.TICK or not cost_status:  # the first write carries the price too
            cost_status = self._accrue(key, job, cost_status, intervals, now, price, status)
            new["cost"] = cost_status
        headroom = (
            self.settings.poll_interval_seconds * costing.allocated_gpus(intervals) if trigger == Trigger.TICK else 0.0
        )
        decision = costing.budget_decision(
            job.spec.budget,
            float(cost_status.get("gpuSeconds") or 0.0),
            float(cost_status.get("costSoFar") or 0.0),
            currency=self.settings.currency,
            headroom_gpu_seconds=headroom,
            price_per_gpu_hour=price,
        )
        if not decision.exceeded and key[0] in self.settings.namespace_budgets and not cost_status.get("gpuSeconds"):
            # A job that has not run yet is held while its namespace is over its budget.
            decision = costing.namespace_budget_decision(
                key[0], self.settings.namespace_budgets, self.namespace_spent(key[0]), currency=self.settings.currency
            )
        held = st.condition(status, st.BUDGET_EXCEEDED)
        if not decision.exceeded and held is not None and held.get("status") == st.TRUE and trigger != Trigger.SPEC:
            # Only a spec change (a raised budget) lifts a budget stop; pod events and ticks keep it,
            # or the headroom the tick adds would suspend and resume the job by turns.
            decision = costing.BudgetDecision(True, str(held.get("reason")), str(held.get("message") or ""))
        if job.spec.run_policy.suspend:
            suspend_reason: str | None = st.Reason.SUSPENDED_BY_USER
        elif decision.exceeded:
            suspend_reason = st.Reason.BUDGET_EXCEEDED
        else:
            suspend_reason = None
        if decision.exceeded:
            if not st.is_true(status, st.BUDGET_EXCEEDED):
                self.metrics.record_budget_exceeded(key[0], decision.reason)
            updates.append(st.CondUpdate(st.BUDGET_EXCEEDED, st.TRUE, decision.reason, decision.message))
        elif (
            st.condition(status, st.BUDGET_EXCEEDED) is not None
            or job.spec.budget.max_cost
            or job.spec.budget.max_gpu_hours
        ):
            updates.append(st.CondUpdate(st.BUDGET_EXCEEDED, st.FALSE, decision.reason, decision.message))

        # Children: create-or-adopt on spec triggers; recreate after a restart's backoff.
        want_suspend = suspend_reason is not None
        created_now = False
        try:
            if batch is None and restart_after is None and trigger == Trigger.SPEC:
                applied = await apply_all(self.api(), render(job, self.settings, suspend=want_suspend).objects())
                batch = applied[-1].obj
                created_now = True
            elif batch is None and restart_after is not None and now >= restart_after:
                if not any(j["metadata"].get("uid") == handled for j in self._index(JOB_INDEX, key)):
                    applied = await apply_all(self.api(), render(job, self.settings, suspend=want_suspend).objects())
                    batch = applied[-1].obj
                    created_now = True
                    await self.annotate(key, {ANN_RESTART_AFTER: None})
                    restart_after = None
            elif batch is not None and bool(batch.get("spec", {}).get("suspend")) != want_suspend:
                batch = await self.api().patch(
                    JOBS, key[0], batch["metadata"]["name"], {"spec": {"suspend": want_suspend}}
                )
        except ChildConflict as exc:
            updates.append(st.CondUpdate(st.CREATED, st.FALSE, st.Reason.CHILD_CONFLICT, str(exc)))
            new["phase"] = st.PENDING
            new["conditions"] = st.set_conditions(
                status.get("conditions") or [], updates, now=now, generation=generation
            )
            await self.write(key, body, new)
            raise kopf.TemporaryError(str(exc), delay=60) from None
        if batch is not None:
            if created_now or not st.is_true(status, st.CREATED):
                updates.append(
                    st.CondUpdate(
                        st.CREATED,
                        st.TRUE,
                        st.Reason.CHILDREN_CREATED,
                        f"created ConfigMap, Service and Job {batch['metadata']['name']}",
                    )
                )
            if not status.get("startTime"):
                new["startTime"] = st.format_time(now)

        # Observe the current incarnation of the gang.
        views = [st.pod_view(p) for p in pod_dicts]
        jview = st.job_view(batch) if batch is not None else None
        # Pods stopped by a suspension are not failures, even after the resume.
        resumed = st.condition(status, st.SUSPENDED) or {}
        if resumed.get("status") == st.TRUE and suspend_reason is None:
            resumed_at: datetime | None = now  # resuming right now
        elif resumed.get("status") == st.FALSE:
            resumed_at = st.parse_time(resumed.get("lastTransitionTime"))
        else:
            resumed_at = None
        obs = st.observe(
            jview, views, workers=job.spec.resources.workers, suspend_reason=suspend_reason, resumed_at=resumed_at
        )
        phase = obs.phase
        updates.extend(obs.conditions)

        deadline = job.spec.run_policy.active_deadline_seconds
        started = st.parse_time(status.get("startTime") or new.get("startTime"))
        if obs.verdict == st.Verdict.SUCCEEDED:
            new["completionTime"] = st.format_time(now)
            new["output"] = {"uri": job.spec.output.uri, "metrics": (status.get("output") or {}).get("metrics") or {}}
            self.metrics.record_completion(key[0], key[1], RESULT_SUCCEEDED)
        elif obs.verdict == st.Verdict.DEADLINE or (
            deadline is not None and started is not None and now - started >= timedelta(seconds=deadline)
        ):
            phase = st.FAILED
            msg = f"ran longer than spec.runPolicy.activeDeadlineSeconds ({deadline}s); pods stopped"
            updates.append(st.CondUpdate(st.FAILED, st.TRUE, st.Reason.DEADLINE_EXCEEDED, msg))
            updates.append(st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.DEADLINE_EXCEEDED, msg))
            new["completionTime"] = st.format_time(now)
            if batch is not None:
                await self.api().delete(JOBS, key[0], batch["metadata"]["name"])
            self.metrics.record_completion(key[0], key[1], RESULT_FAILED)
        elif obs.verdict in (st.Verdict.WORKER_FAILED, st.Verdict.DISRUPTED) and jview is not None:
            phase = await self._restart(key, job, status, jview, obs, intervals, now, price, new, updates)
        elif batch is None and restart_after is not None:
            phase = st.RESTARTING
            updates = [u for u in updates if u.type != st.RUNNING]
            updates.append(st.CondUpdate(st.RUNNING, st.FALSE, st.Reason.WORKER_FAILED, "waiting to restart the gang"))

        if phase != st.RESTARTING and st.condition(status, st.RESTARTING) is not None:
            updates.append(st.CondUpdate(st.RESTARTING, st.FALSE, st.Reason.NOT_RESTARTING, "the gang is up"))
        if phase != st.SUSPENDED and st.is_true(status, st.SUSPENDED):
            updates.append(st.CondUpdate(st.SUSPENDED, st.FALSE, st.Reason.RESUMED, "resumed from the last checkpoint"))
        if phase == st.SUCCEEDED and st.condition(status, st.FAILED) is None:
            updates.append(st.CondUpdate(st.FAILED, st.FALSE, st.Reason.JOB_COMPLETED, "finished without failing"))

        if phase == st.RUNNING and trigger == Trigger.TICK:
            new.update(await self._poll_progress(views, jview, status, job, cost_status, intervals, price))
        if phase == st.RUNNING and status.get("phase") != st.RUNNING:
            created = st.parse_time(meta.get("creationTimestamp"))
            if created is not None:
                self.metrics.record_running(key[0], key[1], (now - created).total_seconds())
        new["phase"] = phase
        new["conditions"] = st.set_conditions(status.get("conditions") or [], updates, now=now, generation=generation)
        written = await self.write(key, body, new)
        if trigger == Trigger.TICK:
            self.metrics.observe_job(sample_from_body(written, allocated=costing.allocated_gpus(intervals)))

    # -- steps ------------------------------------------------------------------------------------
    async def _fail_invalid(self, key: Key, body: Mapping[str, Any], exc: SpecInvalid, now: datetime) -> None:
        """A spec that slipped past admission: Failed, the message names the field; no children."""
        status = body.get("status") or {}
        message = "; ".join(str(e) for e in exc.errors)
        if status.get("phase") == st.FAILED and (st.condition(status, st.FAILED) or {}).get("message") == message:
            return
        generation = (body.get("metadata") or {}).get("generation")
        new = {
            "phase": st.FAILED,
            "observedGeneration": generation,
            "completionTime": status.get("completionTime") or st.format_time(now),
            "conditions": st.set_conditions(
                status.get("conditions") or [],
                [
                    st.CondUpdate(st.FAILED, st.TRUE, st.Reason.INVALID_SPEC, message),
                ],
                now=now,
                generation=generation,
            ),
        }
        await self.write(key, body, new)
        self.metrics.record_completion(key[0], key[1], RESULT_FAILED)

    def _accrue(
        self,
        key: Key,
        job: AdaptationJob,
        cost_status: dict[str, Any],
        intervals: list[costing.PodInterval],
        now: datetime,
        price: float,
        status: Mapping[str, Any],
    ) -> dict[str, Any]:
        ledger = costing.CostLedger.from_status(cost_status)
        accrual = costing.accrue(ledger, intervals, now)
        eta = (status.get("progress") or {}).get("etaSeconds")
        figures = costing.cost_figures(
            accrual.ledger.gpu_seconds, price, eta_seconds=eta, allocated_gpus=costing.allocated_gpus(intervals)
        )
        if accrual.added_gpu_seconds:
            usage = UsageKey(
                key[0], job.spec.queue_name or self.settings.default_queue_name, job.spec.resources.gpu_type
            )
            self.metrics.add_usage(usage, accrual.added_gpu_seconds, costing.cost_of(accrual.added_gpu_seconds, price))
        out = {
            **cost_status,
            **accrual.status_patch(),
            **figures.to_status(),
            "currency": self.settings.currency,
            "gpuType": job.spec.resources.gpu_type,
        }
        for name in ("gpuSeconds", "costSoFar", "projectedCost"):
            if isinstance(out.get(name), float):
                out[name] = round(out[name], 6)
        return out

    async def _restart(
        self,
        key: Key,
        job: AdaptationJob,
        status: Mapping[str, Any],
        jview: st.JobView,
        obs: st.Observation,
        intervals: list[costing.PodInterval],
        now: datetime,
        price: float,
        new: dict[str, Any],
        updates: list[st.CondUpdate],
    ) -> str:
        """Count a failure or a disruption once per Job incarnation, stop the gang, schedule it again."""
        fresh = await self.api().get(ADAPTATION_JOBS, key[0], key[1]) or {}
        fresh_status = fresh.get("status") or status
        if ((fresh.get("metadata") or {}).get("annotations") or {}).get(ANN_HANDLED_JOB) == jview.uid:
            return st.RESTARTING
        restarts = int(fresh_status.get("restarts") or 0)
        disruptions = int(fresh_status.get("disruptions") or 0)
        limit = job.spec.run_policy.backoff_limit
        # Count the GPU time of the pods about to be deleted, while they can still be seen.
        new["cost"] = self._accrue(key, job, dict(fresh_status.get("cost") or {}), intervals, now, price, fresh_status)
        if obs.verdict == st.Verdict.WORKER_FAILED and restarts >= limit:
            msg = f"{obs.message}; spec.runPolicy.backoffLimit ({limit}) restarts used up"
            updates.append(st.CondUpdate(st.FAILED, st.TRUE, st.Reason.BACKOFF_LIMIT_EXCEEDED, msg))
            updates.append(st.CondUpdate(st.RESTARTING, st.FALSE, st.Reason.BACKOFF_LIMIT_EXCEEDED, msg))
            new["completionTime"] = st.format_time(now)
            await self.annotate(key, {ANN_HANDLED_JOB: jview.uid})
            self.metrics.record_completion(key[0], key[1], RESULT_FAILED)
            return st.FAILED
        if obs.verdict == st.Verdict.WORKER_FAILED:
            restarts += 1
            delay = st.restart_delay(
                restarts, self.settings.restart_backoff_seconds, self.settings.restart_backoff_max_seconds
            )
            reason, what = st.Reason.WORKER_FAILED, f"restart {restarts}/{limit} after a worker failure"
            self.metrics.record_restart(key[0], RESTART_FAILURE)
        else:
            disruptions += 1
            delay = 0.0
            reason, what = st.Reason.DISRUPTED, f"disruption {disruptions} (not counted against backoffLimit)"
            self.metrics.record_restart(key[0], RESTART_DISRUPTION)
        when = now + timedelta(seconds=delay)
        await self.annotate(key, {ANN_HANDLED_JOB: jview.uid, ANN_RESTART_AFTER: st.format_time(when)})
        await self.api().delete(JOBS, key[0], jview.name)
        new["restarts"] = restarts
        new["disruptions"] = disruptions
        msg = f"{what}: {obs.message}; the gang restarts from the latest checkpoint in {delay:g}s"
        updates.append(st.CondUpdate(st.RESTARTING, st.TRUE, reason, msg))
        return st.RESTARTING

    async def _poll_progress(
        self,
        views: list[st.PodView],
        jview: st.JobView | None,
        status: Mapping[str, Any],
        job: AdaptationJob,
        cost_status: dict[str, Any],
        intervals: list[costing.PodInterval],
        price: float,
    ) -> dict[str, Any]:
        """Status fields from rank 0's /progress (nothing when it does not answer)."""
        pod = progress.rank0(st.current_pods(views, jview))
        if pod is None or pod.ip is None or self.http is None:
            return {}
        report = await progress.fetch(self.http, pod.ip, pod.progress_port or self.settings.progress_port)
        if report is None:
            return {}
        fields = progress.progress_status(report)
        if report.eta_seconds is not None:
            figures = costing.cost_figures(
                float(cost_status.get("gpuSeconds") or 0.0),
                price,
                eta_seconds=report.eta_seconds,
                allocated_gpus=costing.allocated_gpus(intervals),
            )
            if figures.projected_cost is not None:
                cost_status["projectedCost"] = round(figures.projected_cost, 6)
        if report.eval_metrics:
            fields["output"] = {
                "uri": job.spec.output.uri,
                "metrics": {k: round(float(v), 4) for k, v in sorted(report.eval_metrics.items())},
            }
        return progress.changed_keys(status, fields)

    async def _expire(self, key: Key, ttl: int | None, status: Mapping[str, Any], now: datetime) -> None:
        """ttlSecondsAfterFinished: delete the finished job (its children go with it)."""
        done = st.parse_time(status.get("completionTime"))
        if ttl is None or done is None or now < done + timedelta(seconds=ttl):
            return
        await self.api().delete(ADAPTATION_JOBS, key[0], key[1])
        log.info("deleted %s/%s: finished %ss ago, past ttlSecondsAfterFinished", key[0], key[1], ttl)

    # -- periodic work -----------------------------------------------------------------------------
    def ensure_ticker(self) -> None:
        """Start the periodic task from a handler's context (kopf's Event queue lives in it)."""
        if self.ticker is None or self.ticker.done():
            self.ticker = asyncio.get_running_loop().create_task(self.tick_forever(), name="kadapt-ticker")

    async def tick_forever(self) -> None:
        """Every poll interval, converge every known job (progress, cost, budget, backoff, TTL)."""
        sem = asyncio.Semaphore(TICK_CONCURRENCY)

        async def one(key: Key) -> None:
            async with sem:
                try:
                    await self.converge(key, Trigger.TICK)
                except (ApiError, kopf.TemporaryError) as exc:
                    log.warning("tick %s/%s: %s", key[0], key[1], exc)
                except Exception:  # one job's bug must not stop the others' ticks
                    log.exception("tick %s/%s failed", key[0], key[1])

        while True:
            await asyncio.sleep(self.settings.poll_interval_seconds)
            index = self.indices.get(AJ_INDEX)
            keys = list(index.keys()) if index is not None else []
            await asyncio.gather(*(one(k) for k in keys))
            if index is not None:  # a safety net for deletions whose watch event was missed
                self.metrics.retain_jobs(k for k in index if index[k])


def immutable_changes(diff: Iterable[Any]) -> list[str]:
    """Spec fields (``spec.model`` ...) that a diff changes although they are immutable."""
    out: set[str] = set()
    for item in diff:
        path = tuple(item[1])
        if path[:1] == ("spec",):
            path = path[1:]
        if path and path[0] not in MUTABLE_SPEC_FIELDS:
            out.add(f"spec.{path[0]}")
    return sorted(out)


def _keys_of(namespace: str | None, labels: Mapping[str, str]) -> Key | None:
    name = labels.get(LABEL_JOB_NAME)
    return (namespace or DEFAULT_NAMESPACE, name) if name else None


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """A fresh kopf registry with kadapt's handlers bound to ``rt``."""
    registry = kopf.OperatorRegistry()
    selector = {LABEL_JOB_NAME: kopf.PRESENT}

    @kopf.on.login(registry=registry)
    async def login_handler(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = await asyncio.to_thread(login, rt.options, **kwargs)
        if info is not None:
            old, rt.client = rt.client, KubeClient(info)
            if old is not None:
                await old.close()
        return info

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

    @kopf.index(API_GROUP, API_VERSION, PLURAL, id=AJ_INDEX, registry=registry)
    async def kadapt_jobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
        return {(namespace or DEFAULT_NAMESPACE, name): _plain(body)}

    @kopf.index("batch", "v1", "jobs", labels=selector, id=JOB_INDEX, registry=registry)
    async def kadapt_batch_jobs(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[Key, Any]:
        key = _keys_of(namespace, labels)
        return {key: _plain(body)} if key else {}

    @kopf.index("v1", "pods", labels=selector, id=POD_INDEX, registry=registry)
    async def kadapt_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, Any]:
        key = _keys_of(namespace, labels)
        return {key: _plain(body)} if key else {}

    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL, registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION, PLURAL, registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec", registry=registry)
    async def reconcile(
        namespace: str | None, name: str, body: kopf.Body, reason: str, diff: kopf.Diff, **_: Any
    ) -> None:
        rt.ensure_ticker()
        if reason == kopf.Reason.UPDATE:
            changed = immutable_changes(diff)
            if changed:
                events.post(
                    body,
                    st.Reason.IMMUTABLE_FIELD_CHANGED,
                    f"{', '.join(changed)} changed after creation and is ignored: the running Job keeps its "
                    "spec; create a new AdaptationJob to change it (only spec.budget and spec.runPolicy may change)",
                )
        try:
            await rt.converge((namespace or DEFAULT_NAMESPACE, name), Trigger.SPEC)
        except ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=2) from exc

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def forget(namespace: str | None, name: str, type: str, **_: Any) -> None:
        """A deleted job: drop its metrics series and per-job memory (no finalizer needed).

        ``on.delete(optional=True)`` runs only for objects held by a finalizer; the watch's
        DELETED event is what a plain deletion produces.
        """
        if type != "DELETED":
            return
        key = (namespace or DEFAULT_NAMESPACE, name)
        rt.metrics.remove_job(*key)
        rt.locks.pop(key, None)
        rt.written.pop(key, None)

    @kopf.on.event("batch", "v1", "jobs", labels=selector, registry=registry)
    @kopf.on.event("v1", "pods", labels=selector, registry=registry)
    async def child_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        key = _keys_of(namespace, labels)
        if key is None:
            return
        rt.ensure_ticker()
        try:
            await rt.converge(key, Trigger.CHILDREN)
        except ApiError as exc:
            log.warning("status of %s/%s not updated: %s", key[0], key[1], exc)

    return registry
