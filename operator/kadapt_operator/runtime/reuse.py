"""Remembered results in the cluster: a GitOps re-apply of a finished job does not train again.

When a job succeeds, :func:`remember` records its result in the namespace's ConfigMap
``kadapt-results`` (see :mod:`kadapt_operator.results` for the record and its key, a hash of
the spec without ``budget`` and ``runPolicy``). When Argo CD's self-heal or a Flux re-apply
creates the job again after someone deleted it, :func:`from_record` finds the record on the
new object's first reconcile and the job succeeds at once from it: no Job, no pods, no GPU
time; ``Succeeded=True`` with reason ``ReusedResult`` naming the earlier job, an Event, and
the recorded output and metrics in its status. ``kadapt.dev/rerun: "true"`` trains anyway.
"""

from __future__ import annotations

import logging

from kadapt_operator import k8s, results
from kadapt_operator.api import AdaptationJob, AdaptationJobStatus, OutputStatus
from kadapt_operator.metrics import RESULT_REUSED
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.client import CONFIG_MAPS, ApiError
from kadapt_operator.runtime.context import ReconcileContext
from kadapt_operator.runtime.pinned import ANN_STARTED_SPEC
from kadapt_operator.runtime.world import Runtime

log = logging.getLogger("kadapt.operator")

#: Read-modify-write rounds when jobs of one namespace finish at the same moment (409 Conflict).
WRITE_ATTEMPTS = 5
#: HTTP statuses worth retrying through the reconcile (the API server is busy or away).
TRANSIENT_STATUSES = frozenset({0, 429, 500, 502, 503, 504})


async def remember(rt: Runtime, job: AdaptationJob, status: AdaptationJobStatus) -> None:
    """Record a succeeded job's result in ``kadapt-results`` (create, or a resourceVersion-guarded patch).

    A record that cannot be written for good (forbidden, invalid) is logged and skipped:
    the job still succeeds, and only a later identical job trains again. A transient error
    propagates, so the reconcile is retried before the job is marked Succeeded.

    Raises:
        ApiError: the API server is unavailable or overloaded.
    """
    namespace = job.metadata.namespace
    finished = k8s.format_time(status.completion_time) if status.completion_time is not None else ""
    entry = results.record_entry(job, finished, status.output.metrics)
    client = rt.api()
    for _ in range(WRITE_ATTEMPTS):
        stored = await client.get(CONFIG_MAPS, namespace, results.RESULTS_CONFIG_MAP)
        try:
            if stored is None:
                await client.create(results.results_config_map(namespace, entry))
                return
            data = results.record_patch(stored.get("data"), entry)
            if not data:
                return
            guard = {"resourceVersion": (stored.get("metadata") or {}).get("resourceVersion")}
            await client.patch(CONFIG_MAPS, namespace, results.RESULTS_CONFIG_MAP, {"metadata": guard, "data": data})
            return
        except ApiError as exc:
            if exc.status == 409:
                continue  # another job's record landed first: read again
            if exc.status in TRANSIENT_STATUSES:
                raise
            log.warning("%s/%s: result not recorded in ConfigMap %s (%s): an identical job will train again",
                        namespace, job.metadata.name, results.RESULTS_CONFIG_MAP, exc)
            return
    log.warning("%s/%s: result not recorded in ConfigMap %s: %d conflicting writes in a row",
                namespace, job.metadata.name, results.RESULTS_CONFIG_MAP, WRITE_ATTEMPTS)


async def from_record(rt: Runtime, ctx: ReconcileContext) -> bool:
    """On a new job's first reconcile, succeed from an identical earlier job's result.

    A new job is one with no phase and no children ever created (the started-spec
    annotation is written with the first children). Returns True when ``ctx`` now holds a
    Succeeded status to write, False when the job is to be trained.

    Raises:
        ApiError: the ConfigMap could not be read.
    """
    if ctx.old.phase or ctx.batch is not None or ANN_STARTED_SPEC in ctx.meta.annotations:
        return False
    if results.wants_rerun(ctx.job):
        return False
    stored = await rt.api().get(CONFIG_MAPS, ctx.namespace, results.RESULTS_CONFIG_MAP)
    record = results.reusable_result(ctx.job, (stored or {}).get("data"))
    if record is None:
        return False
    ctx.phase = st.SUCCEEDED
    ctx.status.completion_time = k8s.kube_time(ctx.now)
    ctx.status.output = OutputStatus(uri=record.output_uri, metrics=dict(record.metrics))
    ctx.updates.append(st.CondUpdate(st.SUCCEEDED, st.TRUE, st.Reason.REUSED_RESULT, results.reuse_message(record)))
    rt.metrics.record_completion(ctx.namespace, ctx.name, RESULT_REUSED)
    log.info("%s/%s: succeeded from the recorded result of %s (uid %s); not trained",
             ctx.namespace, ctx.name, record.job, record.uid)
    return True
