"""A namespace budget is a cap: its spend ledger survives deleted jobs and operator restarts.

The real operator against the emulator. Spend is booked per job uid into the ConfigMap
``kadapt-spend-<namespace>`` in the operator's namespace; deleting the jobs that spent it, or
restarting the operator, hands nothing back; crossing the budget stops the namespace's
running jobs as a job budget does (the Job suspended, not deleted: the checkpoint is kept);
and last period's spend does not count in this one.

Pod times are reported in the past (``started_at``), so one poll accrues a known amount at
once: with the test price of 3.6 per GPU-hour one GPU-second costs 0.001.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from kadapt_operator.ledger import NamespaceLedger, ledger_name, period_key
from kadapt_operator.settings import BudgetPeriod
from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    JOBS,
    OPERATOR_NAMESPACE,
    PODS,
    SERVICES,
    Cluster,
    OperatorHandle,
    job_manifest,
    running_status,
    start_operator,
)

NS = "team-a"
OTHER = "team-b"
BUDGET = 0.1  # 100 GPU-seconds


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger(cluster: Cluster) -> NamespaceLedger | None:
    """The namespace's spend ledger as stored, or None before the first booking."""
    stored = cluster.get(CONFIGMAPS, OPERATOR_NAMESPACE, ledger_name(NS))
    if stored is None:
        return None
    read, problems = NamespaceLedger.from_data(NS, stored.get("data"))
    assert problems == []
    return read


def spent(cluster: Cluster) -> float:
    found = ledger(cluster)
    return found.spent(datetime.now(UTC)) if found is not None else 0.0


def run_gang(cluster: Cluster, name: str, seconds_ago: float, workers: int = 2) -> list[dict[str, Any]]:
    """Play the Job controller and the kubelet: the gang's pods have run for ``seconds_ago``."""
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, name), message=f"Job {name}")
    pods = []
    for i in range(workers):
        pod = cluster.make_pod(job, i)
        cluster.set_status(PODS, NS, pod["metadata"]["name"], running_status(started_at=ago(seconds_ago)))
        pods.append(pod)
    return pods


def held_by_namespace(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """The BudgetExceeded condition once the namespace budget holds the job, else None."""
    c = checks.condition(cluster, name, NS, "BudgetExceeded")
    return c if c and c["status"] == "True" and c["reason"] == "NamespaceBudgetExceeded" else None


def assert_namespace_advice(cluster: Cluster, name: str) -> None:
    """The held job tells its user to raise the namespace budget (the operator setting), not spec.budget."""
    exceeded = cluster.wait_for(lambda: held_by_namespace(cluster, name), message=f"{name} held by the budget")
    assert f"raise namespaceBudgets.{NS} in the operator config" in exceeded["message"], exceeded
    assert "raise spec.budget" not in exceeded["message"]
    suspended = cluster.wait_for(
        lambda: (c := checks.condition(cluster, name, NS, "Suspended")) and c["status"] == "True" and c,
        message=f"{name} Suspended",
    )
    assert suspended["reason"] == "NamespaceBudgetExceeded"
    assert "namespaceBudgets" in suspended["message"] and "spec.budget" not in suspended["message"], suspended
    cluster.wait_for(
        lambda: [e for e in checks.events_for(cluster, name, NS)
                 if e.get("type") == "Warning" and e.get("reason") == "NamespaceBudgetExceeded"
                 and e.get("message", "").startswith("BudgetExceeded=True")
                 and f"namespaceBudgets.{NS}" in e.get("message", "")],
        message=f"a Warning Event on {name} with the advice",
    )


def test_spend_survives_deleting_the_jobs_and_restarting_the_operator() -> None:
    settings = {"namespace_budgets": {NS: BUDGET}}
    with Cluster(namespaces=(NS, OTHER)) as cluster:
        with cluster.operator(namespaces=[NS, OTHER], settings_overrides=settings):
            cluster.create(AJOBS, job_manifest("spender", NS))
            run_gang(cluster, "spender", seconds_ago=100)  # 2 GPUs x 100 s = 0.2, twice the budget
            cluster.wait_for(lambda: spent(cluster) >= 0.2, message="the spend booked in the ledger")
            uid = (cluster.get(AJOBS, NS, "spender") or {})["metadata"]["uid"]

            # The tenant deletes the job (or its TTL would have); the garbage collector its children.
            cluster.delete(AJOBS, NS, "spender")
            cluster.collect_garbage()
            for pod in cluster.list(PODS, NS):
                cluster.delete(PODS, NS, pod["metadata"]["name"])
            cluster.wait_for(lambda: (found := ledger(cluster)) is not None and uid not in found.jobs,
                             message="the ledger forgot the deleted job's mark")
            assert spent(cluster) >= 0.2, "deleting the job handed its spend back"

            cluster.create(AJOBS, job_manifest("newcomer", NS))
            job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "newcomer"), message="the newcomer's Job")
            assert job["spec"]["suspend"] is True, "a new job started although the namespace spent its budget"
            assert_namespace_advice(cluster, "newcomer")
            cluster.create(AJOBS, job_manifest("elsewhere", OTHER))
            other = cluster.wait_for(lambda: cluster.get(JOBS, OTHER, "elsewhere"))
            assert other["spec"]["suspend"] is False, "team-b has no budget"

        # A new operator process: nothing in memory, only the ledger in the API server.
        with cluster.operator(namespaces=[NS, OTHER], settings_overrides=settings) as restarted:
            cluster.create(AJOBS, job_manifest("after-restart", NS))
            job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "after-restart"), message="its Job")
            assert job["spec"]["suspend"] is True, "the restarted operator forgot the namespace's spend"
            assert_namespace_advice(cluster, "after-restart")
            restarted.wait_handled(NS, "newcomer", more=3, trigger="tick", timeout=30)
            assert held_by_namespace(cluster, "newcomer"), "ticks of the new operator released the held job"
            assert spent(cluster) >= 0.2


def test_crossing_the_namespace_budget_stops_its_running_jobs_and_keeps_their_checkpoints() -> None:
    settings = {"namespace_budgets": {NS: 1.0}}
    with Cluster(namespaces=(NS, OTHER)) as cluster, cluster.operator(
        namespaces=[NS, OTHER], settings_overrides=settings
    ):
        cluster.create(AJOBS, job_manifest("runner", NS))
        run_gang(cluster, "runner", seconds_ago=1)
        cluster.wait_for(lambda: checks.status_of(cluster, "runner", NS).get("phase") == "Running",
                         message="runner Running")
        cluster.wait_for(lambda: checks.status_of(cluster, "runner", NS).get("cost", {}).get("gpuSeconds"),
                         message="runner accrues cost, within the budget")
        assert spent(cluster) < 1.0 and (cluster.get(JOBS, NS, "runner") or {})["spec"]["suspend"] is False
        job_before = cluster.get(JOBS, NS, "runner")
        assert job_before is not None

        # Another job of the namespace reports 2 GPUs x 1000 s = 2.0: the namespace is over its budget.
        cluster.create(AJOBS, job_manifest("spender", NS))
        run_gang(cluster, "spender", seconds_ago=1000)

        stopped = cluster.wait_for(
            lambda: (j := cluster.get(JOBS, NS, "runner")) and j["spec"]["suspend"] is True and j,
            message="the running job suspended by the namespace budget",
        )
        # Suspended, not deleted: the Job controller stops the pods with SIGTERM, the trainer checkpoints.
        assert stopped["metadata"]["uid"] == job_before["metadata"]["uid"]
        assert checks.creations(cluster, JOBS, NS, "runner") == 1
        assert checks.status_of(cluster, "runner", NS).get("restarts", 0) == 0
        assert_namespace_advice(cluster, "runner")
        assert not checks.status_of(cluster, "runner", NS).get("completionTime"), "stopped, not finished"
        assert spent(cluster) >= 1.0
        cluster.wait_for(lambda: (j := cluster.get(JOBS, NS, "spender")) and j["spec"]["suspend"] is True,
                         message="the spender stopped too")


def test_last_periods_spend_does_not_count_in_this_one() -> None:
    """At the period's reset a held job resumes by itself: nothing in its spec changes."""
    now = datetime.now(UTC)
    last_month = period_key(BudgetPeriod.MONTH, now.replace(day=1) - timedelta(days=1))
    with Cluster(namespaces=(NS, OTHER)) as cluster:
        # Last month the namespace spent ten times its budget; this month nothing yet.
        cluster.store(CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ledger_name(NS), "namespace": OPERATOR_NAMESPACE},
            "data": {"namespace": NS, "period": "month", f"spend.{last_month}": "1"},
        })
        # A job held at the end of last month, as the operator wrote it then; the operator (re)starts
        # in the new month. (Stored before the operator runs: injecting the hold into a job the
        # operator is writing would race its own status writes.)
        held = {"type": "BudgetExceeded", "status": "True", "reason": "NamespaceBudgetExceeded",
                "message": f"namespace {NS} has spent 1 USD of its budget; raise namespaceBudgets.{NS}",
                "lastTransitionTime": ago(3600)}
        cluster.store(AJOBS, {**job_manifest("patient", NS), "status": {"phase": "Suspended", "conditions": [held]}})
        with cluster.operator(namespaces=[NS, OTHER], settings_overrides={"namespace_budgets": {NS: BUDGET}}):
            released = cluster.wait_for(
                lambda: (c := checks.condition(cluster, "patient", NS, "BudgetExceeded")) and c["status"] == "False"
                and c,
                message="the hold lifted in the new period",
            )
            assert released["reason"] == "WithinBudget" and released["lastTransitionTime"] != held["lastTransitionTime"]
            job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "patient"), message="its Job")
            assert job["spec"]["suspend"] is False, "last month's spend counted in this month"
            assert checks.creations(cluster, SERVICES, NS, "patient") == 1


def test_only_the_active_replica_books_the_ledger() -> None:
    """Two peered replicas: the paused one books nothing (and keeps no stale ledger to judge by)."""
    from tests.operator.test_ha import PEERING, _install_peering

    settings = {"namespace_budgets": {NS: 1000.0}}

    @contextmanager
    def replica(cluster: Cluster, identity: str, priority: int) -> Iterator[OperatorHandle]:
        handle = start_operator(cluster.kubeconfig, [NS], settings, peering=(PEERING, priority), identity=identity)
        try:
            assert handle.ready_flag.wait(30), f"replica {identity} did not start: {handle.errors}"
            yield handle
        finally:
            handle.stop()

    with Cluster(namespaces=(NS,)) as cluster:
        _install_peering(cluster)
        with replica(cluster, "replica-a", 100) as a:
            cluster.create(AJOBS, job_manifest("shared", NS))
            checks.start_gang(cluster, "shared", NS)
            cluster.wait_for(lambda: NS in a.runtime.ledgers, message="A books while alone")
            with replica(cluster, "replica-b", 200) as b:
                b.wait_handled(NS, "shared", more=3, trigger="tick")  # B is active and ticking
                b.wait_handled(NS, "shared", more=5, trigger="tick")
                assert NS in b.runtime.ledgers, "the active replica books"
                assert NS not in a.runtime.ledgers, "a paused replica must not book (or judge by a stale ledger)"
                assert a.errors == [] and b.errors == []
