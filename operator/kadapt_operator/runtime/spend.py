"""Namespace budgets carried out: the spend ledgers in the API server, booked and read.

The pure rules (periods, idempotent booking per job uid, the verdict and its advice) are in
:mod:`kadapt_operator.ledger`; this module moves ledgers between them and the API server:

* :func:`book_namespaces` runs at the start of every round of periodic work, on the active
  replica only (a paused peer never ticks): for each budgeted namespace it books the running
  totals (``status.cost``) of the namespace's jobs, and the last totals of jobs deleted
  since, into the ledger ConfigMap ``kadapt-spend-<namespace>`` in the operator's namespace.
  The write is a merge patch guarded by the ConfigMap's ``resourceVersion``: on a conflict
  (another writer, a replica that was active a moment ago) it reads the ledger again and
  books again, which books nothing twice.
* :func:`namespace_verdict` is what a reconcile's budget step asks: the ledger as last
  booked (read from the API server when this process has not read it yet, e.g. right after
  a restart), judged for the current period.

Spend thus survives the deletion of the jobs that spent it and the restart of the operator;
it lags the jobs' own cost by at most one poll interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kadapt_operator import cost as costing
from kadapt_operator import ledger as spend_ledger
from kadapt_operator.ledger import JobSpend, NamespaceLedger
from kadapt_operator.runtime.client import CONFIG_MAPS, ApiError
from kadapt_operator.runtime.stored import meta_of, status_of
from kadapt_operator.runtime.world import Runtime

log = logging.getLogger("kadapt.operator")

#: Conflicting writes tolerated in one booking before giving up until the next round.
BOOKING_ATTEMPTS = 5
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


class NoOperatorNamespace(RuntimeError):
    """Namespace budgets are set but the operator does not know the namespace it runs in."""


def operator_namespace(rt: Runtime) -> str:
    """Where the ledgers live: the operator's own namespace.

    Raises:
        NoOperatorNamespace: naming the flag and the variable that set it.
    """
    namespace = rt.options.operator_namespace
    if not namespace:
        raise NoOperatorNamespace(
            "namespaceBudgets are set but the operator's namespace is unknown: pass --operator-namespace "
            "or set POD_NAMESPACE (the Helm chart sets it), so the spend ledgers have a home"
        )
    return namespace


def job_spend(body: Mapping[str, Any]) -> JobSpend | None:
    """A stored AdaptationJob's running totals (None without a uid)."""
    uid = meta_of(body).uid
    if not uid:
        return None
    cost = status_of(body).cost
    return JobSpend(uid=uid, cost=cost.cost_so_far, gpu_seconds=cost.gpu_seconds)


def budgeted(rt: Runtime) -> list[str]:
    """The namespaces with a budget that this operator serves."""
    served = set(rt.options.namespaces)
    return [ns for ns in rt.settings.namespace_budgets if rt.options.clusterwide or ns in served]


def remember_departed(rt: Runtime, body: Mapping[str, Any]) -> None:
    """Keep a deleted job's last totals until the next booking (its last growth still counts)."""
    namespace = meta_of(body).namespace
    spend = job_spend(body)
    if spend is not None and namespace in rt.settings.namespace_budgets:
        rt.departed.setdefault(namespace, []).append(spend)


async def book_namespaces(rt: Runtime, now: datetime) -> None:
    """Book every budgeted namespace's jobs into its ledger (one GET, at most one write each)."""
    for namespace in budgeted(rt):
        departed = rt.departed.pop(namespace, [])
        try:
            await book_namespace(rt, namespace, departed, now)
        except (ApiError, NoOperatorNamespace) as exc:
            rt.departed.setdefault(namespace, []).extend(departed)  # book them next round
            log.warning("spend ledger of namespace %s not booked: %s", namespace, exc)
        except Exception:  # a bug here must not stop the periodic work of every job
            rt.departed.setdefault(namespace, []).extend(departed)
            log.exception("spend ledger of namespace %s not booked", namespace)


async def book_namespace(rt: Runtime, namespace: str, departed: list[JobSpend], now: datetime) -> NamespaceLedger:
    """Read, book and write one namespace's ledger; re-read and re-book on a conflict.

    Raises:
        ApiError: the ledger could not be read or written (after :data:`BOOKING_ATTEMPTS` conflicts).
    """
    home = operator_namespace(rt)
    name = spend_ledger.ledger_name(namespace)
    period = rt.settings.namespace_budget_period
    for _ in range(BOOKING_ATTEMPTS):
        live = [s for s in (job_spend(b) for b in rt.bodies(namespace)) if s is not None]
        stored = await rt.api().get(CONFIG_MAPS, home, name)
        before: dict[str, str] = dict((stored or {}).get("data") or {})
        read, problems = NamespaceLedger.from_data(namespace, before, period)
        for problem in problems:
            log.warning("%s", problem)
        booked = spend_ledger.book_jobs(read, live, departed, now)
        try:
            if stored is None:
                if booked.jobs or booked.spend:
                    await rt.api().create(spend_ledger.ledger_config_map(booked, home))
            else:
                patch = spend_ledger.data_patch(before, booked.to_data())
                if patch:
                    version = meta_of(stored).resource_version
                    body = {"metadata": {"resourceVersion": version}, "data": patch}
                    await rt.api().patch(CONFIG_MAPS, home, name, body)
        except ApiError as exc:
            if exc.status == HTTP_CONFLICT:
                continue  # written by someone else since the read: read it again and book again
            raise
        rt.ledgers[namespace] = booked
        return booked
    raise ApiError(HTTP_CONFLICT, f"{home}/{name}: {BOOKING_ATTEMPTS} conflicting writes in a row", "Conflict")


async def namespace_ledger(rt: Runtime, namespace: str) -> NamespaceLedger:
    """The namespace's ledger as last booked; read from the API server the first time.

    Raises:
        ApiError: the ledger could not be read.
        NoOperatorNamespace: budgets without a home for their ledgers.
    """
    cached = rt.ledgers.get(namespace)
    if cached is not None:
        return cached
    # One read for the many reconciles of a namespace that start together (a restart's resumes).
    # The prefix ends with "-", which no namespace name does: no job's key is this one.
    async with rt.lock((spend_ledger.LEDGER_PREFIX, namespace)):
        cached = rt.ledgers.get(namespace)
        if cached is not None:
            return cached
        stored = await rt.api().get(CONFIG_MAPS, operator_namespace(rt), spend_ledger.ledger_name(namespace))
        read, problems = NamespaceLedger.from_data(
            namespace, (stored or {}).get("data"), rt.settings.namespace_budget_period
        )
        for problem in problems:
            log.warning("%s", problem)
        rt.ledgers[namespace] = read
        return read


async def namespace_verdict(rt: Runtime, namespace: str, now: datetime) -> tuple[costing.BudgetDecision | None, bool]:
    """The namespace budget's verdict for the current period, and whether it is unknown.

    Returns ``(None, False)`` for a namespace without a budget and ``(None, True)`` when its
    ledger cannot be read (a hold is then kept as it is, and nothing new is held or stopped).
    """
    budgets = rt.settings.namespace_budgets
    if namespace not in budgets:
        return None, False
    try:
        ledger = await namespace_ledger(rt, namespace)
    except (ApiError, NoOperatorNamespace) as exc:
        log.warning("spend ledger of namespace %s not readable: %s", namespace, exc)
        return None, True
    return spend_ledger.namespace_budget_decision(ledger, budgets, now, currency=rt.settings.currency), False
