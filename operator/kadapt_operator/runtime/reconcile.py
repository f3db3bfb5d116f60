"""The one level-triggered reconcile, as a short list of named steps.

Every trigger (an AdaptationJob created, resumed after a restart or its spec changed; an
event on its Job or pods; the periodic tick) runs the same steps under a per-job lock:

1. :func:`read_world`: the stored job, its parsed spec, its Job and pods, the clock;
2. :func:`account_cost`: GPU time since the last look, into the status's cost ledger;
3. :func:`decide_budget_and_suspension`: whether a budget or the user suspends the job;
4. :func:`ensure_children`: create-or-adopt, recreate after a backoff, align ``suspend``;
5. :func:`observe_pods`: phase and conditions from the current incarnation of the gang;
6. :func:`decide_restart_or_failure`: success, deadline, gang restart or backoff exhausted;
7. :func:`poll_progress`: rank 0's ``/progress`` on ticks;
8. :func:`write_status_and_events`: one status patch, only when something changed, and one
   Event per condition transition.

Before them, :func:`repair.drop_unparsable_status` deletes status fields that no longer parse
(with a Warning Event), so that no tick reads and skips them for ever.

The decisions themselves are pure functions in :mod:`kadapt_operator.runtime.decide`;
the steps here gather observations and carry decisions out. The state a reconcile needs
lives in the API server (status, a few ``kadapt.dev/`` annotations), never in memory: a
restarted operator picks up where the last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import kopf

from kadapt_operator import cost as costing
from kadapt_operator import k8s
from kadapt_operator.api import AdaptationJob, AdaptationJobStatus, Cost, OutputStatus, ResolvedStrategy
from kadapt_operator.metrics import (
    RESTART_DISRUPTION,
    RESTART_FAILURE,
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    UsageKey,
    job_sample,
)
from kadapt_operator.render import render
from kadapt_operator.runtime import (
    cleanup,
    creation,
    decide,
    events,
    pinned,
    progress,
    queueing,
    readiness,
    repair,
    reuse,
    spend,
    termination,
)
from kadapt_operator.runtime import deadline as deadline_clock
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.apply import ChildConflict, apply_all, controller_uid
from kadapt_operator.runtime.client import ADAPTATION_JOBS, JOBS, ApiError
from kadapt_operator.runtime.context import ReconcileContext
from kadapt_operator.runtime.decide import ChildAction, Outcome, Trigger
from kadapt_operator.runtime.options import PREFIX
from kadapt_operator.runtime.stored import StoredMeta, meta_of, run_policy_of, status_of, status_patch
from kadapt_operator.runtime.world import JOB_INDEX, Key, Runtime, utcnow
from kadapt_operator.validation import SpecInvalid
from kadapt_trainer.final_summary import FinalSummary

log = logging.getLogger("kadapt.operator")

#: uid of the Job incarnation whose failure was already handled (counted once, even after restarts).
ANN_HANDLED_JOB = f"{PREFIX}/handled-job-uid"
#: When the gang may be recreated after a failure (exponential backoff), RFC 3339.
ANN_RESTART_AFTER = f"{PREFIX}/restart-after"
#: How many jobs one tick works on at once (each may poll a trainer).
TICK_CONCURRENCY = 16

Step = Callable[[Runtime, ReconcileContext], Awaitable[None]]


async def reconcile(rt: Runtime, key: Key, trigger: Trigger) -> None:
    """Bring one AdaptationJob's children and status in line with its spec and its pods."""
    async with rt.lock(key):
        with rt.metrics.reconcile(str(trigger)):
            ctx = await read_world(rt, key, trigger)
            if ctx is not None:
                # A re-applied identical job succeeds from the recorded result: only its status is written.
                for step in ((write_status_and_events,) if await reuse.from_record(rt, ctx) else STEPS):
                    await step(rt, ctx)
            rt.handled[key, str(trigger)] += 1


# -- 1. read the world -------------------------------------------------------------------------
async def read_world(rt: Runtime, key: Key, trigger: Trigger) -> ReconcileContext | None:
    """The context of one reconcile; None when there is nothing (more) to reconcile."""
    body = rt.body(key)
    meta = meta_of(body)
    if body is None or meta.deletion_timestamp is not None:
        return None
    now = utcnow()
    old = status_of(body)
    job = await parse_or_settle(rt, key, body, old, trigger, now)
    if job is None:
        return None
    handled = meta.annotations.get(ANN_HANDLED_JOB)
    batch = rt.batch_job(key, meta.uid)
    if batch is not None and st.job_view(batch).uid == handled:
        batch = None  # the failed incarnation, being deleted: not the gang any more
    # Cost belongs to this incarnation (uid): not to pods a deleted namesake left behind.
    own_jobs = {str(st.job_view(j).uid) for j in rt.indexed(JOB_INDEX, key) if controller_uid(j) == meta.uid}
    own_jobs |= {handled} if handled else set()
    pods = costing.billable_pods(rt.pods(key), own_jobs=own_jobs, accounted=set(old.cost.accounted_until))
    status = old.model_copy(deep=True)
    # Render from the spec the job started with; an ignored immutable change does not advance observedGeneration.
    pin = pinned.pin(job, meta.annotations)
    job = pin.job
    status.observed_generation = pinned.observed_generation(pin, meta.generation, old)
    ctx = ReconcileContext(
        key=key,
        trigger=trigger,
        now=now,
        meta=meta,
        job=job,
        old=old,
        status=status,
        batch=batch,
        handled_job_uid=handled,
        restart_after=k8s.parse_time(meta.annotations.get(ANN_RESTART_AFTER)),
        pods=pods,
        intervals=[p for p in (costing.pod_interval(d) for d in pods) if p is not None],
        price=costing.price_for(rt.settings, job.spec.resources.gpu_type),
    )
    spec_applied = pinned.spec_condition(pin, old, meta.generation)
    ctx.updates.extend([spec_applied] if spec_applied else [])
    return ctx


async def parse_or_settle(
    rt: Runtime, key: Key, body: dict[str, Any], old: AdaptationJobStatus, trigger: Trigger, now: datetime
) -> AdaptationJob | None:
    """The parsed spec of a live job; None (after marking it Failed, or expiring it) otherwise.

    An invalid spec is marked Failed; a finished job only has its TTL looked at, on ticks.
    """
    try:
        job = rt.parse(body)
    except SpecInvalid as exc:
        await fail_invalid(rt, key, meta_of(body), old, exc, now)
        if trigger == Trigger.TICK:  # an invalid job expires too, if its TTL at least is readable
            await expire(rt, key, run_policy_of(body).ttl_seconds_after_finished, old, now)
        return None
    if old.phase in st.TERMINAL_PHASES:
        if old.phase == st.SUCCEEDED:
            await settle_final(rt, key, meta_of(body), job, old, now)
        if trigger == Trigger.TICK:
            await expire(rt, key, job.spec.run_policy.ttl_seconds_after_finished, old, now)
        return None
    return job


# -- 2. account cost ---------------------------------------------------------------------------
async def account_cost(rt: Runtime, ctx: ReconcileContext) -> None:
    """Accrue GPU time on every tick (the first write carries the price too)."""
    if ctx.trigger == Trigger.TICK or "cost" not in ctx.old.model_fields_set:
        ctx.status.cost = accrue(rt, ctx, ctx.old)


def accrue(rt: Runtime, ctx: ReconcileContext, status: AdaptationJobStatus) -> Cost:
    """``status.cost`` after counting the pods' GPU time up to now; adds the increase to the fleet counters."""
    ledger = costing.CostLedger.from_status(status.cost.model_dump(by_alias=True))
    if ledger.problems and not ctx.repairs_reported:  # the write below stores the repair: say it once
        events.post_repairs(ctx.meta, ledger.problems)
        ctx.repairs_reported = True
    accrual = costing.accrue(ledger, ctx.intervals, ctx.now)
    allocated = costing.allocated_gpus(ctx.intervals)
    eta = status.progress.eta_seconds
    figures = costing.cost_figures(accrual.ledger.gpu_seconds, ctx.price, eta_seconds=eta, allocated_gpus=allocated)
    spec = ctx.job.spec
    if accrual.added_gpu_seconds:
        gpu_label = costing.gpu_type_label(rt.settings, spec.resources.gpu_type)
        usage = UsageKey(ctx.namespace, spec.queue_name or rt.settings.default_queue_name, gpu_label)
        rt.metrics.add_usage(usage, accrual.added_gpu_seconds, costing.cost_of(accrual.added_gpu_seconds, ctx.price))
    return Cost(
        gpu_seconds=round(figures.gpu_seconds, 6),
        cost_so_far=round(figures.cost_so_far, 6),
        projected_cost=None if figures.projected_cost is None else round(figures.projected_cost, 6),
        currency=rt.settings.currency,
        price_per_gpu_hour=figures.price_per_gpu_hour,
        gpu_type=spec.resources.gpu_type,
        accounted_until={k: k8s.format_time(v) for k, v in sorted(accrual.ledger.accounted_until.items())},
    )


# -- 3. budget and suspension ------------------------------------------------------------------
async def decide_budget_and_suspension(rt: Runtime, ctx: ReconcileContext) -> None:
    """Whether the job's budget, its namespace's budget or the user suspends it."""
    spec = ctx.job.spec
    cost = ctx.status.cost
    tick = ctx.trigger == Trigger.TICK
    headroom = rt.settings.poll_interval_seconds * costing.allocated_gpus(ctx.intervals) if tick else 0.0
    job_budget = costing.budget_decision(
        spec.budget,
        cost.gpu_seconds,
        cost.cost_so_far,
        currency=rt.settings.currency,
        headroom_gpu_seconds=headroom,
        price_per_gpu_hour=ctx.price,
    )
    # The namespace's spend this period, from its ledger: running jobs are stopped by it too.
    namespace_budget, namespace_unknown = await spend.namespace_verdict(rt, ctx.namespace, ctx.now)
    outcome = decide.decide_budget(
        decide.BudgetInputs(
            job_budget=job_budget,
            namespace_budget=namespace_budget,
            held=st.condition(ctx.old, st.BUDGET_EXCEEDED),
            has_budget=bool(spec.budget.max_cost or spec.budget.max_gpu_hours),
            user_suspend=spec.run_policy.suspend,
            trigger=ctx.trigger,
            namespace_unknown=namespace_unknown,
        )
    )
    if outcome.newly_exceeded:
        rt.metrics.record_budget_exceeded(ctx.namespace, outcome.decision.reason)
    if outcome.condition is not None:
        ctx.updates.append(outcome.condition)
    ctx.suspend_reason = outcome.suspend_reason


# -- 4. ensure children ------------------------------------------------------------------------
async def ensure_children(rt: Runtime, ctx: ReconcileContext) -> None:
    """Create-or-adopt the children on spec triggers, recreate them after a restart's backoff.

    Raises:
        kopf.TemporaryError: a child's name is taken by an object kadapt does not own.
    """
    want_suspend = ctx.suspend_reason is not None
    queued = queueing.queue_name(ctx.job.spec.queue_name, rt.settings.default_queue_name) is not None
    current = st.job_view(ctx.batch) if ctx.batch is not None else None
    action = decide.decide_children(
        job_exists=current is not None,
        job_suspended=current is not None and current.suspended,
        want_suspend=want_suspend,
        restart_after=ctx.restart_after,
        old_incarnation_listed=any(st.job_view(j).uid == ctx.handled_job_uid for j in rt.indexed(JOB_INDEX, ctx.key)),
        trigger=ctx.trigger,
        now=ctx.now,
        queued=queued,
    )
    if action == ChildAction.CREATE and ctx.trigger != Trigger.SPEC:
        # Missing from the index: ask the API server, which knows the Job this process may have
        # just created (the index lags behind); create only what is really gone.
        live = await rt.api().get(JOBS, ctx.namespace, ctx.name)
        if live is not None:
            ctx.batch, action = live, ChildAction.KEEP
    try:
        await carry_out(rt, ctx, action, current, want_suspend=want_suspend, queued=queued)
    except ChildConflict as exc:
        ctx.updates.append(st.CondUpdate(st.CREATED, st.FALSE, st.Reason.CHILD_CONFLICT, str(exc)))
        ctx.phase = st.PENDING
        await write_status_and_events(rt, ctx)
        raise kopf.TemporaryError(str(exc), delay=60) from None
    if ctx.batch is not None and (ctx.created_now or not st.is_true(ctx.old, st.CREATED)):
        msg = f"created ConfigMap, Service and Job {st.job_view(ctx.batch).name}"
        ctx.updates.append(st.CondUpdate(st.CREATED, st.TRUE, st.Reason.CHILDREN_CREATED, msg))


async def carry_out(
    rt: Runtime,
    ctx: ReconcileContext,
    action: ChildAction,
    current: st.JobView | None,
    *,
    want_suspend: bool,
    queued: bool,
) -> None:
    """Do what :func:`decide.decide_children` decided; ``ctx.batch`` is the Job as it is afterwards.

    Raises:
        ChildConflict: a child's name is taken by an object kadapt does not own.
    """
    if action in (ChildAction.CREATE, ChildAction.RECREATE):
        # A queued Job is created suspended: only Kueue unsuspends it, when it admits it.
        suspend = want_suspend or queued
        if pinned.ANN_STARTED_SPEC not in ctx.meta.annotations:  # the spec every later gang is rendered from
            await rt.annotate(ctx.key, pinned.started_annotation(ctx.job, ctx.meta.generation))
        applied = await apply_all(rt.api(), render(ctx.job, rt.settings, suspend=suspend).objects())
        ctx.batch, ctx.created_now = applied[-1], True
    if action == ChildAction.RECREATE:
        await rt.annotate(ctx.key, {ANN_RESTART_AFTER: None})
        ctx.restart_after = None
    if action == ChildAction.STOP and current is not None:
        await rt.api().delete(JOBS, ctx.namespace, current.name)
        ctx.batch = None
    if action == ChildAction.SET_SUSPEND and current is not None:
        patch = {"spec": {"suspend": want_suspend}}
        ctx.batch = await rt.api().patch(JOBS, ctx.namespace, current.name, patch)


# -- 5. observe pods ---------------------------------------------------------------------------
async def observe_pods(rt: Runtime, ctx: ReconcileContext) -> None:
    """Phase and conditions from the current incarnation of the gang."""
    ctx.views = [st.pod_view(p) for p in ctx.pods]
    ctx.job_view = st.job_view(ctx.batch) if ctx.batch is not None else None
    since = decide.resumed_at(
        st.condition(ctx.old, st.SUSPENDED), suspending=ctx.suspend_reason is not None, now=ctx.now
    )
    obs = st.observe(
        ctx.job_view,
        ctx.views,
        workers=ctx.job.spec.resources.workers,
        suspend_reason=ctx.suspend_reason,
        resumed_at=since,
    )
    obs = await creation.explain(rt, ctx, obs)  # a gang short of pods: the Job controller's FailedCreate
    queue = queueing.observe_queue(
        queueing.queue_name(ctx.job.spec.queue_name, rt.settings.default_queue_name),
        ctx.job_view,
        suspend_reason=ctx.suspend_reason,
        old_status=ctx.old,
    )
    if queue.phase is not None:
        obs = st.Observation(queue.phase, queue.conditions)
    else:
        ctx.updates.extend(queue.conditions)
    if queue.preempted:
        ctx.status.disruptions = ctx.old.disruptions + 1
        rt.metrics.record_restart(ctx.namespace, RESTART_DISRUPTION)
    ctx.observation = obs
    ctx.phase = obs.phase
    if ctx.old.start_time is None and ctx.phase == st.RUNNING:
        # activeDeadlineSeconds counts from the first running pod, not from creation: waiting in a
        # queue, for a node or for an image pull does not use it up.
        ctx.status.start_time = k8s.kube_time(first_pod_start(ctx) or ctx.now)
    ctx.updates.extend(obs.conditions)


def first_pod_start(ctx: ReconcileContext) -> datetime | None:
    """When the first pod of the current gang started (its container's ``startedAt``), if known."""
    starts = [p.started_at for p in st.current_pods(ctx.views, ctx.job_view) if p.started_at is not None]
    return min(starts) if starts else None


# -- 6. restart or failure ---------------------------------------------------------------------
async def decide_restart_or_failure(rt: Runtime, ctx: ReconcileContext) -> None:
    """Act on the gang's verdict: success, deadline, a gang restart, or waiting for one."""
    assert ctx.observation is not None
    deadline = ctx.job.spec.run_policy.active_deadline_seconds
    clock = await deadline_clock.track(rt, ctx)  # suspended and queued time does not count
    bad_input = permanent_failure(ctx)
    outcome = decide.decide_outcome(
        ctx.observation.verdict,
        deadline_passed=decide.deadline_passed(deadline, ctx.status.start_time, ctx.now, clock),
        job_exists=ctx.job_view is not None,
        restart_pending=ctx.restart_after is not None,
        bad_input=bad_input is not None,
    )
    if outcome == Outcome.BAD_INPUT and bad_input is not None:
        # The Job (backoffLimit 0, podFailurePolicy FailJob) stops the peers; its pods stay for the logs.
        ctx.phase = st.FAILED
        ctx.updates.extend(decide.bad_input_conditions(bad_input))
        ctx.status.completion_time = k8s.kube_time(ctx.now)
        rt.metrics.record_completion(ctx.namespace, ctx.name, RESULT_FAILED)
    elif outcome == Outcome.SUCCEEDED:
        ctx.status.completion_time = k8s.kube_time(ctx.now)
        if ctx.status.start_time is None and (started := first_pod_start(ctx)) is not None:
            ctx.status.start_time = k8s.kube_time(started)  # ran and ended between two looks
        ctx.status.output = OutputStatus(uri=ctx.job.spec.output.uri, metrics=ctx.old.output.metrics)
        summary = termination.final_summary(gang_pods(ctx))
        if summary is not None:
            ctx.updates.extend(final_figures(ctx.status, summary, ctx.job.spec.output.uri))
        await reuse.remember(rt, ctx.job, ctx.status)  # before the status: a failed write is retried
        rt.metrics.record_completion(ctx.namespace, ctx.name, RESULT_SUCCEEDED)
    elif outcome == Outcome.DEADLINE:
        ctx.phase = st.FAILED
        ctx.updates.extend(decide.deadline_conditions(deadline, clock.paused_at(ctx.now)))
        ctx.status.completion_time = k8s.kube_time(ctx.now)
        if ctx.job_view is not None:
            await rt.api().delete(JOBS, ctx.namespace, ctx.job_view.name)
        rt.metrics.record_completion(ctx.namespace, ctx.name, RESULT_FAILED)
    elif outcome == Outcome.RESTART:
        ctx.phase = await restart(rt, ctx)
    elif outcome == Outcome.WAITING_TO_RESTART:
        ctx.phase = st.RESTARTING
        ctx.updates = decide.waiting_conditions(ctx.updates)
    ctx.updates.extend(decide.settle_conditions(ctx.phase, ctx.old))


def gang_pods(ctx: ReconcileContext) -> list[dict[str, Any]]:
    """The Pod objects of the current incarnation of the gang."""
    current = {view.name for view in st.current_pods(ctx.views, ctx.job_view)}
    return [pod for pod, view in zip(ctx.pods, ctx.views, strict=True) if view.name in current]


def permanent_failure(ctx: ReconcileContext) -> termination.Termination | None:
    """The current gang's first pod whose trainer ended with bad input (exit 2), or None."""
    return termination.permanent_failure(gang_pods(ctx))


def final_figures(status: AdaptationJobStatus, summary: FinalSummary, output_uri: str | None) -> list[st.CondUpdate]:
    """Put the trainer's final result into ``status`` (not the last poll); the conditions it sets.

    The last ``/progress`` poll can be a whole poll interval old when the pods exit (a stale
    step, loss and metrics); rank 0's termination message holds the figures of the end.
    """
    status.progress = termination.final_progress(summary, status.progress)
    status.output = OutputStatus(uri=output_uri, metrics=dict(status.progress.eval_metrics))
    if summary.total_params:  # a run that ended before the first poll has no counts in status yet
        status.parameters = progress.parameters_of(summary.trainable_params, summary.total_params)
    if summary.strategy:
        status.strategy = ResolvedStrategy(resolved=summary.strategy, reason=status.strategy.reason)
    if summary.last_checkpoint:
        status.last_checkpoint = progress.user_uri(summary.last_checkpoint)
    verdict = termination.baseline_condition(summary)
    return [verdict] if verdict is not None else []


async def settle_final(
    rt: Runtime, key: Key, meta: StoredMeta, job: AdaptationJob, old: AdaptationJobStatus, now: datetime
) -> None:
    """A Succeeded job whose rank 0 pod showed its final summary only after the Job completed.

    The Job and pod watches are separate streams: the Job's completion can be seen first, so
    the figures are recorded on whatever wakes the job next (a pod event, a tick). Writes
    nothing when the status already holds them.
    """
    batch = rt.batch_job(key, meta.uid)
    if batch is None:
        return
    uid = st.job_view(batch).uid
    summary = termination.final_summary(p for p in rt.pods(key) if st.pod_view(p).owner_uid == uid)
    if summary is None:
        return
    new = old.model_copy(deep=True)
    updates = final_figures(new, summary, job.spec.output.uri)
    new.conditions = st.set_conditions(old.conditions, updates, now=now, generation=meta.generation)
    if status_patch(old, new) is None:
        return
    await reuse.remember(rt, pinned.pin(job, meta.annotations).job, new)  # with the final metrics
    await rt.write_status(key, meta, old, new)
    rt.metrics.observe_job(job_sample(key[0], key[1], new, job.spec.budget, allocated=0))


async def restart(rt: Runtime, ctx: ReconcileContext) -> str:
    """Count a failure or a disruption once per Job incarnation, stop the gang, schedule it again."""
    assert ctx.job_view is not None and ctx.observation is not None
    jview = ctx.job_view
    fresh_body = await rt.api().get(ADAPTATION_JOBS, ctx.namespace, ctx.name)
    fresh = status_of(fresh_body) if fresh_body is not None else ctx.old
    if meta_of(fresh_body).annotations.get(ANN_HANDLED_JOB) == jview.uid:
        return st.RESTARTING
    # Count the GPU time of the pods about to be deleted, while they can still be seen.
    ctx.status.cost = accrue(rt, ctx, fresh)
    plan = decide.decide_restart(
        ctx.observation.verdict,
        restarts=fresh.restarts,
        disruptions=fresh.disruptions,
        backoff_limit=ctx.job.spec.run_policy.backoff_limit,
        backoff_seconds=rt.settings.restart_backoff_seconds,
        backoff_max_seconds=rt.settings.restart_backoff_max_seconds,
        detail=ctx.observation.message,
    )
    ctx.updates.extend(decide.restart_conditions(plan))
    if plan.give_up:
        ctx.status.completion_time = k8s.kube_time(ctx.now)
        await rt.annotate(ctx.key, {ANN_HANDLED_JOB: jview.uid})
        rt.metrics.record_completion(ctx.namespace, ctx.name, RESULT_FAILED)
        return st.FAILED
    rt.metrics.record_restart(ctx.namespace, RESTART_FAILURE if plan.worker_failure else RESTART_DISRUPTION)
    when = ctx.now + timedelta(seconds=plan.delay_seconds)
    await rt.annotate(ctx.key, {ANN_HANDLED_JOB: jview.uid, ANN_RESTART_AFTER: k8s.format_time(k8s.kube_time(when))})
    await rt.api().delete(JOBS, ctx.namespace, jview.name)
    ctx.status.restarts = plan.restarts
    ctx.status.disruptions = plan.disruptions
    return st.RESTARTING


# -- 7. progress -------------------------------------------------------------------------------
async def poll_progress(rt: Runtime, ctx: ReconcileContext) -> None:
    """On ticks of a running job: status fields from rank 0's /progress (nothing when it does not answer)."""
    if ctx.phase != st.RUNNING or ctx.trigger != Trigger.TICK:
        return
    pod = progress.rank0(st.current_pods(ctx.views, ctx.job_view))
    if pod is None or pod.ip is None or rt.http is None:
        return
    report = await progress.fetch(rt.http, pod.ip, pod.progress_port or rt.settings.progress_port)
    if report is None:
        return
    parts = progress.progress_status(report)
    status = ctx.status
    status.progress, status.parameters = parts.progress, parts.parameters
    if parts.strategy is not None:
        status.strategy = parts.strategy
    if parts.last_checkpoint is not None:
        status.last_checkpoint = parts.last_checkpoint
    if report.eta_seconds is not None:
        allocated = costing.allocated_gpus(ctx.intervals)
        figures = costing.cost_figures(
            status.cost.gpu_seconds, ctx.price, eta_seconds=report.eta_seconds, allocated_gpus=allocated
        )
        if figures.projected_cost is not None:
            status.cost = status.cost.model_copy(update={"projected_cost": round(figures.projected_cost, 6)})
    if parts.progress.eval_metrics:
        status.output = OutputStatus(uri=ctx.job.spec.output.uri, metrics=parts.progress.eval_metrics)


# -- 8. status and events ----------------------------------------------------------------------
async def write_status_and_events(rt: Runtime, ctx: ReconcileContext) -> None:
    """One status patch when something changed, an Event per condition transition, the job's metrics."""
    if ctx.phase == st.RUNNING and ctx.old.phase != st.RUNNING and ctx.meta.creation_timestamp is not None:
        rt.metrics.record_running(ctx.namespace, ctx.name, (ctx.now - ctx.meta.creation_timestamp).total_seconds())
    ctx.status.phase = ctx.phase
    unpriced = readiness.gpu_type_condition(rt.settings, ctx.job.spec.resources.gpu_type)
    updates = [*ctx.updates, *([unpriced] if unpriced else [])]
    merged = st.set_conditions(ctx.old.conditions, updates, now=ctx.now, generation=ctx.generation)
    kstatus = readiness.readiness(ctx.phase, merged)
    ctx.status.conditions = st.set_conditions(merged, kstatus, now=ctx.now, generation=ctx.generation)
    await rt.write_status(ctx.key, ctx.meta, ctx.old, ctx.status)
    finished = ctx.phase in st.TERMINAL_PHASES
    if ctx.trigger == Trigger.TICK or finished:
        # A finished job is never ticked again: its last sample is final and holds no GPUs.
        allocated = 0 if finished else costing.allocated_gpus(ctx.intervals)
        spec = ctx.job.spec
        rt.metrics.observe_job(job_sample(ctx.namespace, ctx.name, ctx.status, spec.budget, allocated=allocated))


STEPS: tuple[Step, ...] = (
    repair.drop_unparsable_status,
    account_cost,
    decide_budget_and_suspension,
    ensure_children,
    observe_pods,
    decide_restart_or_failure,
    poll_progress,
    write_status_and_events,
)


# -- the ends of a job's life ------------------------------------------------------------------
async def fail_invalid(
    rt: Runtime, key: Key, meta: StoredMeta, old: AdaptationJobStatus, exc: SpecInvalid, now: datetime
) -> None:
    """A spec that slipped past admission: Failed, the message names the field; no children."""
    message = "; ".join(str(e) for e in exc.errors)
    failed = st.condition(old, st.FAILED)
    if old.phase == st.FAILED and failed is not None and failed.message == message:
        return
    update = st.CondUpdate(st.FAILED, st.TRUE, st.Reason.INVALID_SPEC, message)
    new = old.model_copy(deep=True)
    new.phase = st.FAILED
    new.observed_generation = meta.generation
    new.completion_time = old.completion_time or k8s.kube_time(now)
    new.conditions = st.set_conditions(old.conditions, [update], now=now, generation=meta.generation)
    await rt.write_status(key, meta, old, new)
    rt.metrics.record_completion(key[0], key[1], RESULT_FAILED)


async def expire(rt: Runtime, key: Key, ttl: int | None, status: AdaptationJobStatus, now: datetime) -> None:
    """ttlSecondsAfterFinished: remove the finished job's children, never the job (see cleanup.py)."""
    if not decide.expired(ttl, status.completion_time, now):
        return
    await cleanup.remove_children(rt, key, now, ttl)


# -- periodic work -----------------------------------------------------------------------------
async def tick_forever(rt: Runtime) -> None:
    """Every poll interval, reconcile every known job (progress, cost, budget, backoff, TTL)."""
    sem = asyncio.Semaphore(TICK_CONCURRENCY)

    async def one(key: Key) -> None:
        async with sem:
            try:
                await reconcile(rt, key, Trigger.TICK)
            except (ApiError, kopf.TemporaryError) as exc:
                log.warning("tick %s/%s: %s", key[0], key[1], exc)
            except Exception:  # one job's bug must not stop the others' ticks
                log.exception("tick %s/%s failed", key[0], key[1])

    while True:
        await asyncio.sleep(rt.settings.poll_interval_seconds)
        active = await rt.active()
        rt.metrics.export_fleet(active)  # only the active replica exports fleet and job metrics
        if not active:
            rt.ledgers.clear()  # another replica books spend meanwhile: read the ledgers afresh when active
            continue  # a paused peer: the active replica does the periodic work and counts fleet cost
        await spend.book_namespaces(rt, utcnow())
        keys = rt.keys()
        await asyncio.gather(*(one(k) for k in keys))
        if rt.indices:  # a safety net for deletions whose watch event was missed
            rt.metrics.retain_jobs(rt.keys())
