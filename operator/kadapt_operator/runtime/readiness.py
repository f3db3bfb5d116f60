"""kstatus conditions: ``Ready``, ``Reconciling`` and ``Stalled``, derived from phase and conditions.

Tools that know no AdaptationJob read these (sigs.k8s.io/cli-utils kstatus, which Flux's
health checks and ``kubectl wait`` rely on):

* ``Ready=True`` once the job has Succeeded: ``kubectl wait --for=condition=Ready aj/NAME``
  waits for the trained result;
* ``Reconciling=True`` while the operator is still getting there (pending, queued in Kueue,
  starting, training, restarting the gang): kstatus reports *InProgress*;
* ``Stalled=True`` when it cannot get there without someone acting: Failed, stopped by a
  budget (the job's or the namespace's), or pods that cannot start (an image that cannot be
  pulled, a missing Secret or ConfigMap, pods the Job controller may not create): *Failed*.

A job suspended by its user is neither: all three are False (kstatus: *Current*, which is
what a paused job is). Pure: computed from the conditions the reconcile just built.
"""

from __future__ import annotations

from collections.abc import Sequence

from kadapt_operator import cost as costing
from kadapt_operator.api import Condition
from kadapt_operator.runtime import status as st

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
KSTATUS_TYPES = (READY, RECONCILING, STALLED)

#: Reasons on the Running condition that need a user's fix before any pod can run.
STALLING_REASONS = frozenset({"ImagePullError", "CreateContainerConfigError", "FailedCreate"})


def readiness(phase: str | None, conditions: Sequence[Condition]) -> tuple[st.CondUpdate, ...]:
    """The three kstatus conditions for a job in ``phase`` with ``conditions`` (already merged)."""
    by_type = {c.type: c for c in conditions}
    phase = phase or st.PENDING

    def true(kind: str) -> Condition | None:
        cond = by_type.get(kind)
        return cond if cond is not None and cond.status == st.TRUE else None

    def three(ready: bool, reconciling: bool, stalled: bool, reason: str, message: str) -> tuple[st.CondUpdate, ...]:
        return (
            st.CondUpdate(READY, st.TRUE if ready else st.FALSE, reason, message),
            st.CondUpdate(RECONCILING, st.TRUE if reconciling else st.FALSE, reason, message),
            st.CondUpdate(STALLED, st.TRUE if stalled else st.FALSE, reason, message),
        )

    if phase == st.SUCCEEDED:
        done = true(st.SUCCEEDED)
        return three(True, False, False, "Succeeded", done.message if done else "training finished")
    if phase == st.FAILED:
        failed = true(st.FAILED)
        return three(False, False, True, failed.reason if failed else "Failed", failed.message if failed else "failed")
    budget = true(st.BUDGET_EXCEEDED)
    if budget is not None:
        return three(False, False, True, budget.reason, budget.message)
    if phase == st.SUSPENDED:
        suspended = true(st.SUSPENDED)
        reason = suspended.reason if suspended else st.Reason.SUSPENDED_BY_USER
        return three(False, False, False, reason, suspended.message if suspended else "suspended")
    running = by_type.get(st.RUNNING)
    if running is not None and running.status == st.FALSE and running.reason in STALLING_REASONS:
        return three(False, False, True, running.reason, running.message)
    detail = by_type.get(st.QUEUED) if phase == st.QUEUED else running
    message = detail.message if detail is not None and detail.message else f"phase {phase}"
    return three(False, True, False, phase, message)


def gpu_type_condition(prices: costing.PriceTable, gpu_type: str) -> st.CondUpdate | None:
    """``GPUTypeKnown=False`` (a Warning Event) for a GPU type missing from the price table.

    Such a job is priced at the table's ``default`` and counted as ``other`` in the fleet
    metrics; the condition says so and names the fix, instead of pricing it silently.
    """
    if costing.is_priced(prices, gpu_type):
        return None
    return st.CondUpdate(
        costing.CONDITION_GPU_TYPE_KNOWN,
        st.FALSE,
        costing.REASON_UNKNOWN_GPU_TYPE,
        costing.unknown_gpu_type_message(prices, gpu_type),
    )
