"""Many jobs at once, and every API request the operator makes is granted by permissions.py."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    JOBS,
    OPERATOR_NAMESPACE,
    PODS,
    SERVICES,
    Cluster,
    complete_job_status,
    job_manifest,
    terminated_status,
)

NS = "team-a"
MANY = 200


def test_200_jobs_created_at_once_are_all_reconciled_none_twice() -> None:
    with Cluster(namespaces=(NS,)) as cluster, cluster.operator():
        names = [f"bulk-{i:03d}" for i in range(MANY)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: cluster.create(AJOBS, job_manifest(n, NS)), names))

        def phases() -> Counter[str | None]:
            return Counter((o.get("status") or {}).get("phase") for o in cluster.list(AJOBS, NS))

        cluster.wait_for(lambda: phases()["Created"] == MANY, timeout=120, interval=0.5, message="all Created")
        jobs = {j["metadata"]["name"] for j in cluster.list(JOBS, NS)}
        assert jobs == set(names)
        for name in names:
            assert checks.creations(cluster, JOBS, NS, name) == 1
            assert checks.creations(cluster, CONFIGMAPS, NS, f"{name}-config") == 1
            assert checks.creations(cluster, SERVICES, NS, name) == 1
        # One POST per child: no create was retried into a conflict.
        posts = Counter(r.path.rsplit("/", 1)[-1] for r in cluster.operator_requests() if r.method == "POST")
        repeated = Counter(
            (r.path.rsplit("/", 1)[-1], r.name) for r in cluster.operator_requests() if r.method == "POST"
        )
        assert [k for k, v in repeated.items() if v > 1 and k[0] != "events"] == []
        assert posts["jobs"] == MANY and posts["configmaps"] == MANY and posts["services"] == MANY


def test_every_request_the_operator_makes_is_granted_by_permissions() -> None:
    from kadapt_operator import permissions

    with Cluster(namespaces=(NS,)) as cluster:
        # A namespace budget: the operator books the namespace's spend into its ledger ConfigMap,
        # in the operator's own namespace (created once, then patched).
        budgets = {"restart_backoff_seconds": 0.0, "namespace_budgets": {NS: 1000.0}}
        with cluster.operator(settings_overrides=budgets):
            # Every path: create, run, fail and restart, suspend, budget, finish, TTL delete, invalid spec.
            cluster.create(AJOBS, job_manifest("rbac", NS, runPolicy={"ttlSecondsAfterFinished": 0}))
            pods = checks.start_gang(cluster, "rbac", NS)
            old = (cluster.get(JOBS, NS, "rbac") or {})["metadata"]["uid"]
            cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], terminated_status(1))
            cluster.wait_for(lambda: (j := cluster.get(JOBS, NS, "rbac")) and j["metadata"]["uid"] != old)
            cluster.patch(AJOBS, NS, "rbac", {"spec": {"runPolicy": {"suspend": True}}})
            cluster.wait_for(lambda: (cluster.get(JOBS, NS, "rbac") or {}).get("spec", {}).get("suspend") is True)
            cluster.patch(AJOBS, NS, "rbac", {"spec": {"runPolicy": {"suspend": False}}})
            cluster.wait_for(lambda: (cluster.get(JOBS, NS, "rbac") or {}).get("spec", {}).get("suspend") is False)
            cluster.set_status(JOBS, NS, "rbac", complete_job_status(2))
            cluster.wait_for(
                lambda: "kadapt.dev/children-removed"
                in (cluster.get(AJOBS, NS, "rbac") or {}).get("metadata", {}).get("annotations", {}),
                message="TTL removed the children",
            )
            # A GitOps re-apply of the finished job succeeds from the recorded result (kadapt-results);
            # a second finished job adds its record to it.
            cluster.delete(AJOBS, NS, "rbac")
            cluster.create(AJOBS, job_manifest("rbac", NS, runPolicy={"ttlSecondsAfterFinished": 0}))
            cluster.wait_for(lambda: (checks.condition(cluster, "rbac", NS, "Succeeded") or {}).get("reason")
                             == "ReusedResult", message="succeeded from the recorded result")
            cluster.create(AJOBS, job_manifest("rbac-two", NS))
            cluster.wait_for(lambda: cluster.get(JOBS, NS, "rbac-two"))
            cluster.set_status(JOBS, NS, "rbac-two", complete_job_status(2))
            cluster.wait_for(lambda: len((cluster.get(CONFIGMAPS, NS, "kadapt-results") or {}).get("data", {})) == 2,
                             message="both results recorded")
            bad = job_manifest("rbac-bad", NS)
            bad["spec"]["resources"] = {"workers": 0}
            cluster.create(AJOBS, bad)
            cluster.wait_for(lambda: checks.status_of(cluster, "rbac-bad", NS).get("phase") == "Failed")
            cluster.wait_for(lambda: checks.events_for(cluster, "rbac-bad", NS))
            ledger = f"kadapt-spend-{NS}"
            cluster.wait_for(lambda: cluster.get(CONFIGMAPS, OPERATOR_NAMESPACE, ledger)
                             and any(r.method == "PATCH" and r.path.endswith(ledger)
                                     for r in cluster.operator_requests()),
                             message="the spend ledger created and patched")
        mode = permissions.Mode(all_namespaces=False, peering=False)
        used: set[tuple[str, str, str]] = set()
        in_home: set[tuple[str, str, str]] = set()
        denied = []
        for req in cluster.operator_requests():
            attrs = permissions.request_attributes(req.method, req.path, req.params)
            if attrs is None:
                continue  # discovery: allowed to every authenticated user
            used.add((attrs.api_group, attrs.resource, attrs.verb))
            if attrs.namespace == OPERATOR_NAMESPACE:
                in_home.add((attrs.api_group, attrs.resource, attrs.verb))
            granted = permissions.is_granted(attrs, mode, [NS], operator_namespace=OPERATOR_NAMESPACE)
            if not (granted or permissions.is_tolerated(attrs)):
                denied.append(f"{req.method} {req.path} -> {attrs}")
        assert not denied, "requests that the chart's RBAC would forbid:\n" + "\n".join(sorted(set(denied)))
        # In its own namespace the operator touches the ledgers only, exactly as the ledgers' Role grants.
        assert in_home == permissions.granted_pairs(mode, permissions.Scope.OPERATOR), in_home
        # The test saw the operator's whole repertoire, not a trivial subset.
        assert {
            ("batch", "jobs", "create"),
            ("batch", "jobs", "delete"),
            ("batch", "jobs", "patch"),
            ("kadapt.dev", "adaptationjobs/status", "patch"),
            ("", "events", "create"),
            ("", "configmaps", "delete"),
            ("", "configmaps", "get"),
            ("", "configmaps", "patch"),
            ("", "services", "delete"),
        } <= used
        assert ("kadapt.dev", "adaptationjobs", "delete") not in used, "the TTL must never delete the AdaptationJob"
