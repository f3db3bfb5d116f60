"""Deletion, ttlSecondsAfterFinished and budgets against the real operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    JOBS,
    PODS,
    SERVICES,
    Cluster,
    OperatorHandle,
    complete_job_status,
    job_manifest,
    running_status,
)

NS = "team-a"


def test_deleting_the_job_takes_its_children_with_it(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("doomed", NS))
    checks.start_gang(cluster, "doomed", NS)
    cluster.wait_for(lambda: checks.status_of(cluster, "doomed", NS).get("phase") == "Running")

    def series() -> bool:
        return 'job_name="doomed"' in operator.metrics.render().decode()

    cluster.wait_for(series, message="per-job metrics series")
    seen = operator.handled(NS, "doomed", trigger="children")
    cluster.delete(AJOBS, NS, "doomed")
    # No finalizer: the object is gone at once; the garbage collector follows the ownerReferences.
    assert cluster.get(AJOBS, NS, "doomed") is None
    removed = cluster.collect_garbage()
    assert {(r, n) for r, _, n in removed} >= {(JOBS, "doomed"), (CONFIGMAPS, "doomed-config"), (SERVICES, "doomed")}
    cluster.collect_garbage()  # pods were owned by the Job
    assert not [p for p in cluster.list(PODS, NS) if p["metadata"]["name"].startswith("doomed-")]
    cluster.wait_for(lambda: not series(), message="the job's metrics series removed")
    # The operator has seen the children go (reconciles of the deleted job) and brings nothing back.
    cluster.wait_for(lambda: operator.handled(NS, "doomed", trigger="children") > seen, message="children events")
    cluster.create(AJOBS, job_manifest("bystander", NS))
    cluster.wait_for(lambda: cluster.get(JOBS, NS, "bystander"))
    assert cluster.get(JOBS, NS, "doomed") is None and checks.creations(cluster, JOBS, NS, "doomed") == 1


def test_ttl_after_finished_removes_the_children_even_across_an_operator_restart() -> None:
    with Cluster(namespaces=(NS,)) as cluster:
        with cluster.operator():
            cluster.create(AJOBS, job_manifest("shortlived", NS, runPolicy={"ttlSecondsAfterFinished": 2}))
            cluster.create(AJOBS, job_manifest("keeper", NS))
            for name in ("shortlived", "keeper"):
                cluster.wait_for(lambda n=name: cluster.get(JOBS, NS, n))  # type: ignore[misc]
                cluster.set_status(JOBS, NS, name, complete_job_status(2))
            cluster.wait_for(lambda: checks.status_of(cluster, "shortlived", NS).get("phase") == "Succeeded")
            cluster.wait_for(lambda: checks.status_of(cluster, "keeper", NS).get("phase") == "Succeeded")
            assert cluster.get(AJOBS, NS, "shortlived") is not None
        # The clock runs on while no operator is up; the next one reads completionTime from status.
        with cluster.operator():
            cluster.wait_for(
                lambda: (
                    "kadapt.dev/children-removed"
                    in (cluster.get(AJOBS, NS, "shortlived") or {}).get("metadata", {}).get("annotations", {})
                ),
                timeout=15,
                message="TTL clean-up",
            )
        # The TTL removes the children, never the AdaptationJob: GitOps tools would re-create it.
        for res, name in ((JOBS, "shortlived"), (CONFIGMAPS, "shortlived-config"), (SERVICES, "shortlived")):
            assert cluster.get(res, NS, name) is None, f"{res} {name} left behind"
        kept = cluster.get(AJOBS, NS, "shortlived")
        assert kept is not None and kept["status"]["phase"] == "Succeeded"
        assert cluster.get(JOBS, NS, "keeper") is not None  # no TTL: children kept


def _ago(seconds: float) -> str:
    return (datetime.now(tz=UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_budget_suspends_the_job_and_raising_it_resumes(cluster: Cluster, operator: OperatorHandle) -> None:
    # 2 pods x 1 GPU for 60 s = 120 GPU-seconds, over a limit of 0.025 GPU-hours (90 GPU-seconds).
    # One pod alone (60) stays under it, so the suspension waits until both running pods are seen.
    cluster.create(AJOBS, job_manifest("thrifty", NS, budget={"maxGPUHours": 0.025}))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "thrifty"))
    pods = [cluster.make_pod(job, i) for i in range(2)]
    for pod in pods:
        cluster.set_status(PODS, NS, pod["metadata"]["name"], running_status(started_at=_ago(60)))
    cluster.wait_for(lambda: (cluster.get(JOBS, NS, "thrifty") or {})["spec"]["suspend"] is True, message="suspend")
    cluster.wait_for(lambda: checks.status_of(cluster, "thrifty", NS).get("phase") == "Suspended")
    exceeded = checks.condition(cluster, "thrifty", NS, "BudgetExceeded")
    assert exceeded is not None and exceeded["status"] == "True" and exceeded["reason"] == "MaxGPUHoursReached"
    assert "raise spec.budget.maxGPUHours" in exceeded["message"]
    suspended = checks.condition(cluster, "thrifty", NS, "Suspended")
    assert suspended is not None and suspended["reason"] == "BudgetExceeded"
    cost = checks.status_of(cluster, "thrifty", NS)["cost"]
    assert cost["gpuSeconds"] >= 120 and cost["costSoFar"] >= 120 / 3600 * 3.6
    cluster.wait_for(
        lambda: any(e["reason"] == "MaxGPUHoursReached" for e in checks.events_for(cluster, "thrifty", NS))
    )
    # The Job controller stops the pods of a suspended Job (the trainer checkpoints on SIGTERM).
    for pod in pods:
        cluster.delete(PODS, NS, pod["metadata"]["name"])
    cluster.patch(AJOBS, NS, "thrifty", {"spec": {"budget": {"maxGPUHours": 10}}})
    cluster.wait_for(lambda: (cluster.get(JOBS, NS, "thrifty") or {})["spec"]["suspend"] is False, message="resume")
    cluster.wait_for(
        lambda: (c := checks.condition(cluster, "thrifty", NS, "BudgetExceeded")) and c["status"] == "False"
    )
    assert checks.status_of(cluster, "thrifty", NS)["phase"] in ("Created", "Running")
    assert checks.status_of(cluster, "thrifty", NS)["cost"]["gpuSeconds"] >= 120  # spending is never forgotten
    assert checks.creations(cluster, JOBS, NS, "thrifty") == 1


def test_namespace_budget_holds_new_jobs_suspended() -> None:
    with (
        Cluster(namespaces=(NS, "team-b")) as cluster,
        cluster.operator(namespaces=[NS, "team-b"], settings_overrides={"namespace_budgets": {NS: 0.05}}) as op,
    ):
        # An earlier job in the namespace already spent more than the namespace's budget: its two
        # one-GPU pods have run for 100 s (0.2 at the test price of 3.6 per GPU-hour), accrued by
        # the operator itself (writing the cost into status by hand would race its own writes).
        cluster.create(AJOBS, job_manifest("spender", NS))
        job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "spender"))
        started = (datetime.now(UTC) - timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i in range(2):
            pod = cluster.make_pod(job, i)
            cluster.set_status(PODS, NS, pod["metadata"]["name"], running_status(started_at=started))
        # The active operator has booked that spend into the namespace's ledger (its own view of it).
        cluster.wait_for(
            lambda: (ledger := op.runtime.ledgers.get(NS)) is not None and ledger.spent(datetime.now(UTC)) >= 0.1,
            message="spend booked into the namespace's ledger",
        )
        cluster.create(AJOBS, job_manifest("newcomer", NS))
        cluster.create(AJOBS, job_manifest("elsewhere", "team-b"))
        job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "newcomer"))
        assert job["spec"]["suspend"] is True
        c = cluster.wait_for(lambda: checks.condition(cluster, "newcomer", NS, "BudgetExceeded"))
        assert c["status"] == "True" and c["reason"] == "NamespaceBudgetExceeded" and f"namespace {NS}" in c["message"]
        other = cluster.wait_for(lambda: cluster.get(JOBS, "team-b", "elsewhere"))
        assert other["spec"]["suspend"] is False  # no budget for team-b
