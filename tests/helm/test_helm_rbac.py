"""Least privilege: the chart's RBAC equals permissions.py, which covers what the operator calls."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kadapt_operator import permissions
from kadapt_operator.permissions import (
    Mode,
    Scope,
    granted_pairs,
    is_granted,
    is_tolerated,
    request_attributes,
)
from tests.helm.chart import CASE_IDS, CASES, NAMESPACE, RELEASE, Case, Rendered, render, render_case

Triple = tuple[str, str, str]
OPERATOR_SRC = Path(permissions.__file__).resolve().parent


def _expand(rules: list[dict[str, Any]]) -> set[Triple]:
    out: set[Triple] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def operator_grants(r: Rendered) -> dict[str, set[Triple]]:
    """What the operator's ServiceAccount may do: "cluster" and each namespace -> triples."""
    sa = r.one("ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in r.objects if o["kind"] in ("Role", "ClusterRole")}
    grants: dict[str, set[Triple]] = {}
    for binding in r.of_kind("RoleBinding") + r.of_kind("ClusterRoleBinding"):
        assert binding["subjects"] == [subject], "bindings must name the operator's ServiceAccount only"
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        where = "cluster" if binding["kind"] == "ClusterRoleBinding" else str(ns)
        grants.setdefault(where, set()).update(_expand(role["rules"]))
    return grants


def pair_table(grants: dict[str, set[Triple]]) -> str:
    """Every (scope, group, resource, verb) granted, one a line: what a reviewer reads."""
    return "\n".join(f"{where:<16} {g or 'core':<22} {res:<28} {verb}"
                     for where, triples in sorted(grants.items()) for g, res, verb in sorted(triples))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_granted_pairs_equal_permissions_py(case: Case) -> None:
    grants = operator_grants(render_case(case))
    table = pair_table(grants)
    # The spend ledgers' Role lives in the release namespace in every mode (merged with the
    # watched namespace's Role when the release namespace is served too).
    ledgers = granted_pairs(case.mode, Scope.OPERATOR)
    assert ledgers == {("", "configmaps", "get"), ("", "configmaps", "create"), ("", "configmaps", "patch")}
    if case.mode.all_namespaces:
        assert set(grants) == {"cluster", NAMESPACE}, table
        assert grants["cluster"] == granted_pairs(case.mode, Scope.CLUSTER) | granted_pairs(
            case.mode, Scope.NAMESPACED), table
        assert grants[NAMESPACE] == ledgers, table
        return
    assert set(grants) == {"cluster", NAMESPACE, *case.watched}, table
    # Nothing cluster-wide but what kopf's CRD watch needs.
    assert grants["cluster"] == granted_pairs(case.mode, Scope.CLUSTER) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }, table
    for ns in {*case.watched, NAMESPACE}:
        expected = (granted_pairs(case.mode, Scope.NAMESPACED) if ns in case.watched else set()) | (
            ledgers if ns == NAMESPACE else set())
        assert grants[ns] == expected, f"{ns}:\n{table}"


def test_the_spend_ledgers_role_is_in_the_release_namespace_only() -> None:
    r = render({"watch": {"namespaces": ["team-a", "team-b"]}})
    ledger_roles = [o for o in r.of_kind("Role") if o["metadata"]["name"].endswith("-spend-ledger")]
    assert [o["metadata"]["namespace"] for o in ledger_roles] == [NAMESPACE]
    assert _expand(ledger_roles[0]["rules"]) == granted_pairs(Mode(), Scope.OPERATOR)
    # The tenants' namespaces grant the operator ConfigMaps for the jobs' configs, not the ledgers' home.
    assert operator_grants(r)[NAMESPACE] == granted_pairs(Mode(), Scope.OPERATOR)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_no_secrets_no_wildcards_no_escalation(case: Case) -> None:
    r = render_case(case)
    for role in r.of_kind("Role") + r.of_kind("ClusterRole"):
        for group, resource, verb in _expand(role["rules"]):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
            assert resource.split("/")[0] not in ("secrets", "serviceaccounts", "roles", "rolebindings",
                                                  "clusterroles", "clusterrolebindings", "nodes"), (resource, verb)
            assert verb not in ("escalate", "bind", "impersonate"), (resource, verb)
            if resource == "pods":
                assert verb in ("get", "list", "watch"), "the operator never writes pods: the Job controller does"


def test_user_roles_aggregate_adaptationjob_access_only() -> None:
    r = render({})
    aggregated = [c for c in r.of_kind("ClusterRole")
                  if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in c["metadata"]["labels"])]
    assert {c["metadata"]["name"] for c in aggregated} == {f"{RELEASE}-{NAMESPACE}-edit", f"{RELEASE}-{NAMESPACE}-view"}
    for role in aggregated:
        assert {(g, res.split("/")[0]) for g, res, _ in _expand(role["rules"])} == {("kadapt.dev", "adaptationjobs")}
    view = next(c for c in aggregated if c["metadata"]["name"].endswith("-view"))
    assert {v for _, _, v in _expand(view["rules"])} == {"get", "list", "watch"}
    assert not [c for c in render({"rbac": {"aggregateToDefaultRoles": False}}).of_kind("ClusterRole")
                if c["metadata"]["name"].endswith(("-edit", "-view"))]


def test_rbac_can_be_left_to_the_platform_team() -> None:
    r = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "kadapt-operator"}})
    assert not (r.of_kind("Role") + r.of_kind("ClusterRole") + r.of_kind("RoleBinding")
                + r.of_kind("ClusterRoleBinding") + r.of_kind("ServiceAccount"))
    assert r.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "kadapt-operator"


def test_every_rule_says_why() -> None:
    for rule in permissions.RULES:
        assert len(rule.reason) > 20, rule
        assert rule.verbs and len(set(rule.verbs)) == len(rule.verbs), rule


# --- the authorizer's view of requests ----------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/apis/kadapt.dev/v1alpha1/namespaces/team-a/adaptationjobs?watch=true",
     ("watch", "kadapt.dev", "adaptationjobs", "team-a", None)),
    ("GET", "/apis/kadapt.dev/v1alpha1/adaptationjobs", ("list", "kadapt.dev", "adaptationjobs", None, None)),
    ("PATCH", "/apis/kadapt.dev/v1alpha1/namespaces/team-a/adaptationjobs/j1/status",
     ("patch", "kadapt.dev", "adaptationjobs/status", "team-a", "j1")),
    ("POST", "/apis/batch/v1/namespaces/team-a/jobs", ("create", "batch", "jobs", "team-a", None)),
    ("DELETE", "/api/v1/namespaces/team-a/configmaps/j1-config", ("delete", "", "configmaps", "team-a", "j1-config")),
    ("GET", "/api/v1/namespaces/team-a/pods/j1-0-abc", ("get", "", "pods", "team-a", "j1-0-abc")),
    ("GET", "/api/v1/namespaces", ("list", "", "namespaces", None, None)),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?watch=1&resourceVersion=5",
     ("watch", "apiextensions.k8s.io", "customresourcedefinitions", None, None)),
])
def test_request_attributes_follow_the_api_server(method: str, path: str, expected: tuple[Any, ...]) -> None:
    attrs = request_attributes(method, path)
    assert attrs is not None
    assert (attrs.verb, attrs.api_group, attrs.resource, attrs.namespace, attrs.name) == expected


@pytest.mark.parametrize("path", ["/api", "/apis", "/api/v1", "/apis/kadapt.dev/v1alpha1", "/version"])
def test_discovery_is_not_a_resource_request(path: str) -> None:
    assert request_attributes("GET", path) is None


def test_is_granted_respects_namespaces_and_modes() -> None:
    in_a = request_attributes("POST", "/apis/batch/v1/namespaces/team-a/jobs")
    in_c = request_attributes("POST", "/apis/batch/v1/namespaces/team-c/jobs")
    secret = request_attributes("GET", "/api/v1/namespaces/team-a/secrets/token")
    crds = request_attributes("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?watch=true")
    peering = request_attributes("PATCH", "/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings/kadapt")
    namespaces = request_attributes("GET", "/api/v1/namespaces?watch=true")
    assert in_a and in_c and secret and crds and peering and namespaces
    watched = ("team-a", "team-b")
    assert is_granted(in_a, Mode(), watched) and not is_granted(in_c, Mode(), watched)
    assert is_granted(in_c, Mode(all_namespaces=True))
    assert not is_granted(secret, Mode(all_namespaces=True))
    assert is_granted(crds, Mode(), watched)
    assert not is_granted(peering, Mode(), watched) and is_granted(peering, Mode(peering=True), watched)
    assert not is_granted(namespaces, Mode(), watched) and is_tolerated(namespaces)
    ledger = request_attributes("PATCH", "/api/v1/namespaces/kadapt-system/configmaps/kadapt-spend-team-a")
    ledger_delete = request_attributes("DELETE", "/api/v1/namespaces/kadapt-system/configmaps/kadapt-spend-team-a")
    assert ledger and ledger_delete
    assert is_granted(ledger, Mode(), watched, operator_namespace="kadapt-system")
    assert not is_granted(ledger, Mode(), watched), "only in the operator's namespace"
    assert not is_granted(ledger_delete, Mode(), watched, operator_namespace="kadapt-system"), "ledgers are kept"


# --- what the operator code calls ----------------------------------------------------------------

def _modules() -> Iterator[tuple[Any, ast.Module]]:
    for path in sorted(OPERATOR_SRC.rglob("*.py")):
        rel = path.relative_to(OPERATOR_SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield importlib.import_module(name), ast.parse(path.read_text())


def _resolve(node: ast.AST, namespace: dict[str, Any]) -> Any:
    """The value of a constant, a module-level name, or a dotted attribute of one."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr)
    raise ValueError(ast.unparse(node))


def _kopf_resource(call: ast.Call, namespace: dict[str, Any]) -> tuple[str, str]:
    """(group, plural) of a kopf handler decorator such as @kopf.on.create(GROUP, VERSION, PLURAL)."""
    args: list[Any] = []
    for arg in call.args:
        value = _resolve(arg.value if isinstance(arg, ast.Starred) else arg, namespace)
        args.extend(value if isinstance(arg, ast.Starred) else [value])
    kw = {k.arg: _resolve(k.value, namespace) for k in call.keywords if k.arg in ("group", "version", "plural")}
    if len(args) == 1 and "." in str(args[0]):  # "plural.version.group"
        plural, _, rest = str(args[0]).partition(".")
        return rest.partition(".")[2], plural
    if len(args) >= 3:
        return str(args[0]), str(args[2])
    if len(args) == 2:  # ("v1", "pods") or (group, plural)
        return ("" if args[0] == "v1" else str(args[0]).split("/")[0]), str(args[1])
    return str(kw.get("group", "")), str(kw["plural"])


KOPF_WATCH_ONLY = {"event", "index"}
KOPF_HANDLERS = {"create", "update", "delete", "resume", "field", "event", "index", "timer", "daemon"}
CLIENT_VERBS = {"get": "get", "patch": "patch", "delete": "delete", "list_namespaced": "list"}


def operator_calls() -> dict[Triple, str]:
    """(group, resource, verb) the operator's code asks for -> where, found by reading the code."""
    from kadapt_operator.render import Rendered as RenderedJob
    from kadapt_operator.runtime import client as kube

    kinds_of_render = {"ConfigMap", "Service", "Job"}
    assert {f for f in RenderedJob.__dataclass_fields__ if f in ("config_map", "service", "job")}
    found: dict[Triple, str] = {}
    for module, tree in _modules():
        ns = vars(module)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            where = f"{module.__name__}:{node.lineno}"
            func = ast.unparse(node.func)
            attr = node.func.attr
            if func in ("kopf.event", "kopf.info", "kopf.warn", "kopf.exception"):
                found.setdefault(("", "events", "create"), where)
            elif (func.startswith("kopf.on.") and attr in KOPF_HANDLERS) or func in ("kopf.timer", "kopf.daemon",
                                                                                    "kopf.index"):
                group, plural = _kopf_resource(node, ns)
                verbs = ["list", "watch"] if attr in KOPF_WATCH_ONLY else ["list", "watch", "patch"]
                for verb in verbs:
                    found.setdefault((group, plural, verb), where)
            elif attr in CLIENT_VERBS and node.args:
                try:
                    kind = _resolve(node.args[0], ns)
                except (KeyError, ValueError, AttributeError):
                    kind = None
                if kind is None and "client" in ast.unparse(node.func.value):
                    # A kind computed at run time (apply.py's create-or-adopt): any child kind.
                    for name in kinds_of_render:
                        k = kube.kind_of({"kind": name})
                        found.setdefault((k.group, k.plural, CLIENT_VERBS[attr]), where)
                    continue
                if not isinstance(kind, kube.Kind):
                    continue
                sub = next((_resolve(k.value, ns) for k in node.keywords if k.arg == "subresource"), None)
                if sub is None and len(node.args) >= 5:
                    sub = _resolve(node.args[4], ns)
                resource = f"{kind.plural}/{sub}" if sub else kind.plural
                found.setdefault((kind.group, resource, CLIENT_VERBS[attr]), where)
            elif attr == "create" and "client" in ast.unparse(node.func.value):
                for name in kinds_of_render:
                    k = kube.kind_of({"kind": name})
                    found.setdefault((k.group, k.plural, "create"), where)
    return found


def test_what_the_operator_calls_is_granted_in_every_mode() -> None:
    calls = operator_calls()
    assert ("batch", "jobs", "create") in calls, "the scan found no Job creation: has the operator client moved?"
    for case in CASES:
        granted = granted_pairs(case.mode)
        missing = {t: w for t, w in calls.items() if t not in granted}
        assert not missing, f"{case.name}: the operator calls these but the chart does not grant them: {missing}"


def test_every_grant_for_kadapts_code_is_called_by_it() -> None:
    """Only the verbs the operator uses: a grant nobody calls is a grant to remove."""
    code_pairs = set().union(*(r.pairs() for r in permissions.RULES if r.origin == permissions.Origin.CODE))
    unused = code_pairs - set(operator_calls())
    assert not unused, f"granted but never called by kadapt_operator: {sorted(unused)}"


def test_namespaced_and_default_install_agree() -> None:
    assert operator_grants(render({}))[NAMESPACE] == operator_grants(
        render({"watch": {"namespaces": [NAMESPACE]}}))[NAMESPACE]


def test_same_release_name_in_two_namespaces_shares_no_cluster_object() -> None:
    def cluster_scoped(namespace: str) -> set[tuple[str, str]]:
        r = render({"watch": {"namespaces": [namespace]}}, namespace=namespace)
        return {(o["kind"], o["metadata"]["name"]) for o in r.objects if "namespace" not in o["metadata"]}

    team_a, team_b = cluster_scoped("team-a"), cluster_scoped("team-b")
    assert team_a and team_b and not team_a & team_b
