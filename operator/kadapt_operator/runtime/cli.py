"""``kadapt operator``: run the operator (the container's entrypoint), wrapping kopf.

The lead adds it to the main CLI with ``register(app)``; ``python -m
kadapt_operator.runtime.cli`` runs it on its own (the benchmarks start it that way).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from kadapt_operator import __version__

OPERATOR_HELP = "Run the kadapt operator: watch AdaptationJobs and run them as Indexed Jobs."


def operator(
    namespace: list[str] = typer.Option(
        [], "--namespace", "-n", help="Serve this namespace (repeatable). Or --all-namespaces."
    ),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Serve every namespace."),
    standalone: bool = typer.Option(False, "--standalone", help="Single replica: no peering with other operators."),
    peering: str | None = typer.Option(None, "--peering", help="Peering name for several replicas (HA)."),
    priority: int = typer.Option(0, "--priority", help="Peering priority: the highest live replica serves."),
    liveness: str | None = typer.Option(
        None, "--liveness", help="Serve a liveness probe, e.g. http://0.0.0.0:8081/healthz."
    ),
    settings_file: Path | None = typer.Option(
        None,
        "--settings",
        help="Operator settings YAML (default $KADAPT_OPERATOR_CONFIG or /etc/kadapt/operator.yaml).",
    ),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Use this kubeconfig instead of in-cluster."),
    operator_namespace: str | None = typer.Option(
        None,
        "--operator-namespace",
        envvar="POD_NAMESPACE",
        help="The operator's own namespace, where namespace budgets keep their spend ledgers "
        "(default $POD_NAMESPACE, else the in-cluster service account's namespace).",
    ),
    no_metrics: bool = typer.Option(False, "--no-metrics", help="Do not serve the operator's /metrics."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    fast: bool = typer.Option(False, "--fast", hidden=True, help="Short timeouts (tests, benchmarks)."),
) -> None:
    """Run the kadapt operator until interrupted."""
    from kadapt_operator.runtime.options import RuntimeOptions
    from kadapt_operator.runtime.startup import run_operator
    from kadapt_operator.settings import SettingsError, load_settings

    if standalone and peering:
        raise typer.BadParameter("use --standalone or --peering NAME, not both", param_hint="--peering")
    try:
        settings = load_settings(settings_file)
        home = operator_namespace or in_cluster_namespace()
        if settings.namespace_budgets and not home:
            raise ValueError(
                "namespaceBudgets are set but the operator's namespace is unknown: pass --operator-namespace "
                "or set POD_NAMESPACE; the spend ledgers live there"
            )
        options = RuntimeOptions(
            namespaces=tuple(namespace),
            clusterwide=all_namespaces,
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness,
            kubeconfig=kubeconfig,
            serve_metrics=not no_metrics,
            fast=fast,
            operator_namespace=home,
        )
    except (SettingsError, ValueError) as exc:
        typer.echo(f"kadapt operator: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        # kopf logs every handled watch event at INFO ("Handler ... succeeded"), per job and per
        # pod: noise at any scale. Its warnings and errors still show; --verbose brings it all back.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    log = logging.getLogger("kadapt.operator")
    served = "all namespaces" if options.clusterwide else "namespaces " + ", ".join(options.namespaces)
    log.info("kadapt operator %s serving %s", __version__, served)
    if options.serve_metrics:
        from kadapt_operator.metrics import serve_metrics

        try:
            serve_metrics(settings.metrics_port)
        except OSError as exc:
            typer.echo(
                f"kadapt operator: cannot serve metrics on port {settings.metrics_port}: {exc.strerror or exc}; "
                "set metricsPort in the operator settings (or KADAPT_METRICS_PORT) to a free port, "
                "or pass --no-metrics",
                err=True,
            )
            raise typer.Exit(2) from None
    from kadapt_operator.metrics import METRICS  # the registry serve_metrics publishes

    asyncio.run(run_operator(settings, options, metrics=METRICS))


#: Where the kubelet mounts a pod's own namespace (the in-cluster service account's).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_cluster_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
    """The namespace the operator's pod runs in, from its service account mount (None outside a pod)."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def register(app: typer.Typer) -> None:
    """Add ``kadapt operator`` to the main CLI."""
    app.command("operator", help=OPERATOR_HELP)(operator)


def main() -> None:
    """Run ``kadapt operator`` as a standalone command."""
    standalone_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    standalone_app.command(help=OPERATOR_HELP)(operator)
    standalone_app()


if __name__ == "__main__":
    main()
