"""Credentials for the API server, from the official ``kubernetes`` client, for kopf and for kadapt.

The client's config loaders do the work: in-cluster service account, or a kubeconfig (an
explicit ``--kubeconfig``, else ``$KUBECONFIG`` / ``~/.kube/config``) with everything the
client supports there (exec and OIDC credential plugins, client certificates, proxies).
The one resulting ``Configuration`` feeds both kopf (as its ``ConnectionInfo``, the way
kopf's own ``login_via_client`` reads it) and kadapt's writes
(:class:`kadapt_operator.runtime.client.KubeClient`).
"""

from __future__ import annotations

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
