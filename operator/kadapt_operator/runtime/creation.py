"""Why a Job has no pods: the Job controller's ``FailedCreate`` Events on the batch Job.

When the API server refuses a pod (a ResourceQuota exceeded, a LimitRange, Pod Security
admission, a webhook), no pod exists to carry the cause: the Job controller only posts a
``FailedCreate`` Warning Event on the Job and retries. Without reading it the job shows
"0/N pods running" forever. While a live Job is short of pods, ticks read the Job's Events
(:func:`kadapt_operator.runtime.decide.creation_check` says when) and name the cause in
``Running=False`` (reason ``FailedCreate``), which also posts a Warning Event on the
AdaptationJob and makes kstatus report it Stalled.
"""

from __future__ import annotations

import logging

from kadapt_operator.runtime import decide
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.client import EVENTS, ApiError
from kadapt_operator.runtime.context import ReconcileContext
from kadapt_operator.runtime.stored import meta_of
from kadapt_operator.runtime.world import Runtime

log = logging.getLogger("kadapt.operator")


async def explain(rt: Runtime, ctx: ReconcileContext, observation: st.Observation) -> st.Observation:
    """``observation``, or one naming the Job controller's refusal when the gang is short of pods."""
    job = ctx.job_view
    if job is None:
        return observation
    current = st.current_pods(ctx.views, job)
    created = meta_of(ctx.batch).creation_timestamp
    shown = st.condition(ctx.old, st.RUNNING)
    check = decide.creation_check(
        decide.pods_missing(job, len(current), ctx.job.spec.resources.workers, observation),
        trigger=ctx.trigger,
        job_age_seconds=(ctx.now - created).total_seconds() if created is not None else None,
        shown=shown,
    )
    if check == decide.CreationCheck.KEEP and shown is not None:
        return st.Observation(st.CREATED, (st.CondUpdate(st.RUNNING, st.FALSE, shown.reason, shown.message),))
    if check != decide.CreationCheck.READ:
        return observation
    selector = f"involvedObject.kind=Job,involvedObject.name={job.name}"
    try:
        events = await rt.api().list_namespaced(EVENTS, ctx.namespace, field_selector=selector)
    except ApiError as exc:  # e.g. an older chart without list on events: the status says less, nothing breaks
        log.warning("events of Job %s/%s not readable: %s", ctx.namespace, job.name, exc)
        return observation
    refused = decide.failed_create(events, job)
    return observation if refused is None else st.Observation(st.CREATED, (refused,))
