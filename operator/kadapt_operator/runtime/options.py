"""How the operator process runs: its options, and kopf's settings made explicit.

Nothing is left to kopf's defaults that an operator in production should decide: the
finalizer and annotation prefix (``kadapt.dev``), where handler progress is stored,
watch and request timeouts, which Events kopf posts on its own, peering, liveness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import kopf

#: Prefix of kadapt's finalizer and of every annotation kopf writes for kadapt.
PREFIX = "kadapt.dev"
FINALIZER = f"{PREFIX}/finalizer"
DIFFBASE_KEY = "last-handled-configuration"
#: Names kopf's own Events with this component (``kubectl describe`` "From").
REPORTING_COMPONENT = "kadapt-operator"


@dataclass(frozen=True)
class RuntimeOptions:
    """How this operator process runs: scope, peering, credentials, probes, speed."""

    namespaces: tuple[str, ...] = ()
    clusterwide: bool = False
    standalone: bool = True
    peering_name: str | None = None
    priority: int = 0
    liveness_endpoint: str | None = None
    kubeconfig: Path | None = None
    serve_metrics: bool = False
    #: The namespace the operator runs in: its namespace budgets' spend ledgers live there
    #: (``kadapt operator --operator-namespace``, default ``$POD_NAMESPACE``). None: no budgets.
    operator_namespace: str | None = None
    #: Short timeouts and intervals for tests and benchmarks against a local emulator.
    fast: bool = False

    def __post_init__(self) -> None:
        if self.clusterwide and self.namespaces:
            raise ValueError("use either --all-namespaces or --namespace, not both")
        if not self.clusterwide and not self.namespaces:
            raise ValueError("name the namespaces to serve (--namespace NS, repeatable) or pass --all-namespaces")
        if not self.standalone and not self.peering_name:
            raise ValueError("peering needs a name: --peering NAME (or --standalone for a single replica)")


def configure(settings: kopf.OperatorSettings, options: RuntimeOptions) -> None:
    """Fill kopf's settings for kadapt before the operator starts."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=DIFFBASE_KEY)
    # kopf's own per-handler Events ("Handler ... succeeded") would double the API traffic;
    # kadapt posts one Event per transition itself, kopf only its warnings and errors.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.execution.max_workers = 8
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # kopf trusts a watch event only once its own last patch came back through the watch; if
    # it stops waiting too early on a busy API server, it sees a stale object and runs the
    # create handler again (harmless here, create-or-adopt, but two rounds of requests).
    settings.persistence.consistency_timeout = 10.0
    settings.peering.standalone = options.standalone
    settings.peering.clusterwide = options.clusterwide
    settings.peering.priority = options.priority
    if options.peering_name:
        settings.peering.name = options.peering_name
        settings.peering.mandatory = True
    if options.fast:
        settings.watching.reconnect_backoff = 0.1
        settings.networking.request_timeout = 120
        settings.networking.error_backoffs = [0.1, 0.2, 0.5]
        settings.queueing.idle_timeout = 1.0
        settings.queueing.exit_timeout = 1.0
        settings.background.instant_exit_timeout = 1.0
        settings.process.ultimate_exiting_timeout = 5.0
        settings.execution.max_workers = 16
    else:
        # Servers end each watch after ~10 minutes; the client gives them a little longer.
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660
        settings.watching.connect_timeout = 30
        settings.watching.reconnect_backoff = 1.0
        settings.watching.inactivity_timeout = 900
        settings.networking.request_timeout = 60
        settings.networking.connect_timeout = 10
