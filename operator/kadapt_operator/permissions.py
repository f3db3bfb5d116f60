"""Every Kubernetes API permission the kadapt operator needs, and why.

This is the single list that the Helm chart's RBAC is checked against
(``tests/helm/test_rbac.py``) and that the operator's recorded API requests are checked
against (the operator's emulator tests). Least privilege is the point: a platform team
reads this file to see what it grants and what each grant is for.

Two modes change the shape of the grants:

* namespaced (``kadapt operator --namespace a --namespace b``): the namespaced rules go in
  a Role in each watched namespace; the only cluster-wide grant is list/watch on
  CustomResourceDefinitions, which kopf watches to notice the AdaptationJob CRD (and
  kopf's peering CRDs) being installed, upgraded or removed.
* all namespaces (``kadapt operator --all-namespaces``): the same namespaced rules, but in a
  ClusterRole, since every namespace is served.

Peering (more than one replica, ``--peering NAME``) adds kopf's peering objects:
``kopfpeerings`` in each watched namespace, or ``clusterkopfpeerings`` in all-namespaces
mode.

In every mode, a Role in the operator's *own* namespace lets it keep the namespace budgets'
spend ledgers there (ConfigMaps ``kadapt-spend-<namespace>``, ``kadapt_operator.ledger``):
away from the tenants' namespaces, so that a tenant who may write ConfigMaps in its own
namespace cannot lower its recorded spend.

Secrets: none. Training pods reference Secrets (image pull secrets, credentials in
environment variables), but the kubelet resolves those, never the operator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, urlsplit

from kadapt_operator.api import API_GROUP, PLURAL

CORE = ""
BATCH = "batch"
APIEXTENSIONS = "apiextensions.k8s.io"
KOPF_GROUP = "kopf.dev"

WATCH = ("list", "watch")


class Scope(StrEnum):
    """Where a rule lives: in a Role per watched namespace, or in a ClusterRole."""

    NAMESPACED = "namespaced"
    CLUSTER = "cluster"
    #: A Role in the operator's own namespace (the release namespace), whatever it serves.
    OPERATOR = "operator"


class When(StrEnum):
    """Which operator mode needs a rule."""

    ALWAYS = "always"
    PEERING_NAMESPACED = "peering-namespaced"  # --peering with --namespace
    PEERING_CLUSTER = "peering-cluster"  # --peering with --all-namespaces


class Origin(StrEnum):
    """Who needs a rule: kadapt's own code (handlers, client calls), kopf's machinery, or admission."""

    CODE = "code"  # a test reads the operator's code and finds exactly these
    KOPF = "kopf"  # kopf's CRD observer and peering, whatever the handlers are
    ADMISSION = "admission"  # checked by an admission plugin, never requested


@dataclass(frozen=True)
class Mode:
    """How the operator runs: which namespaces it serves and whether replicas peer."""

    all_namespaces: bool = False
    peering: bool = False

    def needs(self, when: When) -> bool:
        """Whether a rule marked ``when`` applies in this mode."""
        if when == When.ALWAYS:
            return True
        if when == When.PEERING_NAMESPACED:
            return self.peering and not self.all_namespaces
        return self.peering and self.all_namespaces


@dataclass(frozen=True)
class Rule:
    """One RBAC rule: an API group, a resource (``plural`` or ``plural/subresource``), verbs."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope
    reason: str
    when: When = When.ALWAYS
    origin: Origin = Origin.CODE

    def pairs(self) -> set[tuple[str, str, str]]:
        """The (apiGroup, resource, verb) triples this rule grants."""
        return {(self.api_group, self.resource, verb) for verb in self.verbs}


RULES: tuple[Rule, ...] = (
    # --- kopf's machinery -------------------------------------------------------------------------
    Rule(APIEXTENSIONS, "customresourcedefinitions", WATCH, Scope.CLUSTER,
         "kopf lists and watches CRDs to notice its resources being installed or upgraded",
         origin=Origin.KOPF),
    Rule(KOPF_GROUP, "kopfpeerings", ("list", "watch", "patch"), Scope.NAMESPACED,
         "kopf peering between replicas (--peering, namespaced): keep-alives and leader choice",
         When.PEERING_NAMESPACED, Origin.KOPF),
    Rule(KOPF_GROUP, "clusterkopfpeerings", ("list", "watch", "patch"), Scope.CLUSTER,
         "kopf peering between replicas (--peering, all namespaces): keep-alives and leader choice",
         When.PEERING_CLUSTER, Origin.KOPF),
    # --- the AdaptationJob itself ---------------------------------------------------------------
    Rule(API_GROUP, PLURAL, ("get", "list", "watch", "patch"), Scope.NAMESPACED,
         "handlers watch jobs (kopf patches its progress annotations, kadapt its bookkeeping ones); "
         "re-read before a status write. Never delete: the TTL removes children only"),
    Rule(API_GROUP, f"{PLURAL}/status", ("patch",), Scope.NAMESPACED,
         "write status: phase, conditions, progress, cost"),
    Rule(API_GROUP, f"{PLURAL}/finalizers", ("update",), Scope.NAMESPACED,
         "children set ownerReferences with blockOwnerDeletion, which the "
         "OwnerReferencesPermissionEnforcement admission plugin allows only with this grant",
         origin=Origin.ADMISSION),
    Rule(CORE, "events", ("create", "list"), Scope.NAMESPACED,
         "Events on AdaptationJobs, one per transition (kubectl describe aj); list the Job controller's "
         "FailedCreate Events on a job's batch Job, to name why its pods are not created (quota, Pod Security)"),
    # --- children -------------------------------------------------------------------------------
    Rule(CORE, "configmaps", ("get", "create", "patch", "delete"), Scope.NAMESPACED,
         "the resolved trainer config of each job: create, or adopt and align an existing one "
         "(deleted with the job by the garbage collector, or by spec.runPolicy.ttlSecondsAfterFinished); "
         "and kadapt-results, the record of succeeded jobs: read when a job is created (an identical "
         "re-applied job succeeds from it), created or patched (resourceVersion-guarded) when one succeeds"),
    Rule(CORE, "services", ("get", "create", "patch", "delete"), Scope.NAMESPACED,
         "the headless Service for rendezvous and metrics of each job: create, or adopt an existing one; "
         "delete it past spec.runPolicy.ttlSecondsAfterFinished"),
    Rule(BATCH, "jobs", ("get", "list", "watch", "create", "patch", "delete"), Scope.NAMESPACED,
         "the Indexed Job that runs the training gang: watch its state, suspend/resume it, "
         "delete it to restart the gang"),
    Rule(CORE, "pods", WATCH, Scope.NAMESPACED,
         "watch the gang's pods: rank 0's address for /progress, running GPU seconds, failures, disruptions"),
    # --- the operator's own namespace -----------------------------------------------------------
    Rule(CORE, "configmaps", ("get", "create", "patch"), Scope.OPERATOR,
         "namespace budgets: the spend ledger of each budgeted namespace (kadapt-spend-<namespace>), "
         "read, created once and patched under its resourceVersion; never deleted, since spend must "
         "outlive the jobs"),
)

#: Requests kopf makes but handles a 403 for by design; deliberately not granted.
#: In namespaced mode kopf tries to list and watch namespaces (cluster-wide) to follow
#: namespace patterns; without the grant it logs one warning and serves the exact
#: namespaces it was given, which is all kadapt asks of it.
TOLERATED_FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    (CORE, "namespaces", "list"),
    (CORE, "namespaces", "watch"),
)


def rules(mode: Mode, scope: Scope | None = None) -> list[Rule]:
    """The rules that ``mode`` needs, optionally only those of one scope."""
    return [r for r in RULES if mode.needs(r.when) and (scope is None or r.scope == scope)]


def granted_pairs(mode: Mode, scope: Scope | None = None) -> set[tuple[str, str, str]]:
    """All (apiGroup, resource, verb) triples that ``mode`` needs."""
    out: set[tuple[str, str, str]] = set()
    for rule in rules(mode, scope):
        out |= rule.pairs()
    return out


def rbac_rules(items: Iterable[Rule]) -> list[dict[str, list[str]]]:
    """Rules as the ``rules:`` list of a Kubernetes Role or ClusterRole."""
    return [
        {"apiGroups": [r.api_group], "resources": [r.resource], "verbs": list(r.verbs)} for r in items
    ]


# --- matching real API requests to rules (for tests that record the operator's requests) -------


@dataclass(frozen=True)
class RequestAttributes:
    """What the Kubernetes authorizer sees of one request (its RequestInfo)."""

    verb: str
    api_group: str
    resource: str  # plural, or "plural/subresource"
    namespace: str | None
    name: str | None


_METHOD_VERBS = {"post": "create", "put": "update", "patch": "patch"}


def request_attributes(
    method: str, path: str, query: Mapping[str, str] | None = None
) -> RequestAttributes | None:
    """Map an HTTP request to the RBAC verb and resource the API server authorizes.

    Returns None for non-resource URLs (discovery: ``/api``, ``/apis/...`` group listings,
    ``/version``, ``/openapi``), which every authenticated user may read through the
    built-in ``system:discovery`` role.
    """
    split = urlsplit(path)
    params = dict(query or {})
    params.update({k: v[-1] for k, v in parse_qs(split.query).items()})
    parts = [p for p in split.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = CORE, parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # /api/v1 or /apis/group/version: discovery
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) >= 2 else None)
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    if resource == "namespaces" and name is not None:
        namespace = name
    lower = str(method).rsplit(".", 1)[-1].lower()  # also "GET" from an enum printed as "METHOD.GET"
    watch = params.get("watch", "").lower() in ("1", "true")
    if lower == "get":
        verb = "watch" if watch else ("get" if name else "list")
    elif lower == "delete":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS.get(lower, lower)
    return RequestAttributes(verb=verb, api_group=group, resource=resource, namespace=namespace, name=name)


def is_granted(
    attrs: RequestAttributes,
    mode: Mode,
    watched_namespaces: Iterable[str] = (),
    operator_namespace: str | None = None,
) -> bool:
    """Whether the RBAC that the chart renders for ``mode`` allows this request.

    Namespaced rules apply in ``watched_namespaces`` only, unless ``mode.all_namespaces``.
    Cluster rules apply to cluster-scoped requests and to lists across all namespaces.
    Operator rules apply in ``operator_namespace`` (the release namespace) only.
    """
    triple = (attrs.api_group, attrs.resource, attrs.verb)
    if triple in granted_pairs(mode, Scope.CLUSTER):
        return True
    in_home = operator_namespace is not None and attrs.namespace == operator_namespace
    if in_home and triple in granted_pairs(mode, Scope.OPERATOR):
        return True
    if triple not in granted_pairs(mode, Scope.NAMESPACED):
        return False
    if mode.all_namespaces:
        return True
    return attrs.namespace is not None and attrs.namespace in set(watched_namespaces)


def is_tolerated(attrs: RequestAttributes) -> bool:
    """Whether kopf copes with a 403 for this request (see ``TOLERATED_FORBIDDEN``)."""
    return (attrs.api_group, attrs.resource, attrs.verb) in TOLERATED_FORBIDDEN
