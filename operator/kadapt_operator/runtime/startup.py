"""Explicit kopf configuration and the entry point that runs the operator.

Nothing is left to kopf's defaults that an operator in production should decide: the
finalizer and annotation prefix (``kadapt.dev``), where handler progress is stored,
watch and request timeouts, which Events kopf posts on its own, peering, liveness.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

from kadapt_operator.settings import OperatorSettings

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


def connection_from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    """Credentials from an explicit kubeconfig file (its current context).

    Raises:
        kopf.LoginError: when the file lacks the current context, its cluster or its server.
    """
    try:
        config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise kopf.LoginError(f"kubeconfig {path}: cannot be read: {exc}") from None
    by_name = {
        kind: {i["name"]: i.get(kind[:-1], {}) for i in config.get(kind) or []}
        for kind in ("clusters", "users", "contexts")
    }
    ctx_name = config.get("current-context")
    ctx = by_name["contexts"].get(ctx_name) if ctx_name else None
    if not ctx:
        raise kopf.LoginError(f"kubeconfig {path}: no current-context; set one with kubectl config use-context")
    cluster = by_name["clusters"].get(ctx.get("cluster"), {})
    user = by_name["users"].get(ctx.get("user"), {})
    if not cluster.get("server"):
        raise kopf.LoginError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=cluster.get("certificate-authority"),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        token=user.get("token"),
        scheme="Bearer" if user.get("token") else None,
        username=user.get("username"),
        password=user.get("password"),
        certificate_path=user.get("client-certificate"),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=user.get("client-key"),
        private_key_data=user.get("client-key-data"),
        default_namespace=ctx.get("namespace"),
    )


def login(options: RuntimeOptions, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """An explicit kubeconfig wins; else in-cluster service account; else kopf's usual sources."""
    if options.kubeconfig is not None:
        return connection_from_kubeconfig(options.kubeconfig)
    info = kopf.login_with_service_account(**kwargs)
    if info is None:
        info = kopf.login_via_client(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return info


async def run_operator(
    settings: OperatorSettings,
    options: RuntimeOptions,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run the kadapt operator until ``stop_flag`` is set (or forever)."""
    from kadapt_operator.runtime.handlers import build_registry
    from kadapt_operator.runtime.world import Runtime

    runtime = Runtime(settings=settings, options=options)
    registry = build_registry(runtime)
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, options)
    await kopf.operator(
        registry=registry,
        settings=kopf_settings,
        clusterwide=options.clusterwide,
        namespaces=list(options.namespaces),
        standalone=options.standalone,
        peering_name=options.peering_name,
        priority=options.priority,
        liveness_endpoint=options.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(),
    )
