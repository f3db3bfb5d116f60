"""Credentials for the API server, from the official ``kubernetes`` client, for kopf and for kadapt.

The client's config loaders do the work: in-cluster service account, or a kubeconfig (an
explicit ``--kubeconfig``, else ``$KUBECONFIG`` / ``~/.kube/config``) with everything the
client supports there (exec and OIDC credential plugins, client certificates, proxies).
The one resulting ``Configuration`` feeds both kopf (as its ``ConnectionInfo``, the way
kopf's own ``login_via_client`` reads it) and kadapt's writes
(:class:`kadapt_operator.runtime.client.KubeClient`).
"""

from __future__ import annotations

from pathlib import Path

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kadapt_operator.runtime.options import RuntimeOptions


def client_configuration(options: RuntimeOptions) -> k8s.Configuration:
    """The client configuration for this operator: explicit kubeconfig, else in-cluster, else kubeconfig.

    Raises:
        kopf.LoginError: naming what was tried and how to fix it.
    """
    cfg = k8s.Configuration()
    if options.kubeconfig is not None:
        try:
            k8s_config.load_kube_config(config_file=str(options.kubeconfig), client_configuration=cfg)
        except (k8s_config.ConfigException, OSError, ValueError) as exc:
            raise kopf.LoginError(
                f"kubeconfig {options.kubeconfig}: {exc}; check the file (kubectl config view) "
                "or choose a context with kubectl config use-context"
            ) from None
        return cfg
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config(client_configuration=cfg)
        except (k8s_config.ConfigException, OSError) as exc:
            raise kopf.LoginError(
                f"no credentials: not in a cluster (no service account) and no usable kubeconfig ({exc}); "
                "pass --kubeconfig PATH or set KUBECONFIG"
            ) from None
    return cfg


def connection_info(cfg: k8s.Configuration, default_namespace: str | None = None) -> kopf.ConnectionInfo:
    """kopf's credentials from the client's configuration (host, CA, token or basic auth, client cert)."""
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        default_namespace=default_namespace,
    )


class KubeconfigError(Exception):
    """No usable credentials for a user's command; the message names what was tried and the fix."""


def user_configuration(kubeconfig: Path | None, context: str | None) -> tuple[k8s.Configuration, str | None]:
    """The client configuration of a user's command (``kadapt compare --cluster``), and its namespace.

    As ``kubectl`` does: the kubeconfig first (``--kubeconfig``, else ``$KUBECONFIG`` or
    ``~/.kube/config``; ``--context`` or its current context), the in-cluster service account
    only when there is no kubeconfig at all. The namespace is the context's, if it names one.

    Raises:
        KubeconfigError: naming the file or context and how to fix it.
    """
    cfg = k8s.Configuration()
    where = str(kubeconfig) if kubeconfig is not None else "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
    try:
        k8s_config.load_kube_config(
            config_file=None if kubeconfig is None else str(kubeconfig), context=context, client_configuration=cfg
        )
        contexts, current = k8s_config.list_kube_config_contexts(None if kubeconfig is None else str(kubeconfig))
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        if kubeconfig is None and context is None:
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)
            except k8s_config.ConfigException:
                pass
            else:
                return cfg, _service_account_namespace()
        fix = (
            f"context {context!r} not usable; list them with kubectl config get-contexts"
            if context is not None and "context" in str(exc).lower()
            else "pass --kubeconfig PATH or set KUBECONFIG, and --context NAME to choose a context"
        )
        raise KubeconfigError(f"no credentials for the cluster from {where}: {exc}; {fix}") from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return cfg, str(namespace) if namespace else None


def _service_account_namespace() -> str | None:
    """The pod's namespace when running in a cluster (the service account's namespace file)."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() or None if path.exists() else None
