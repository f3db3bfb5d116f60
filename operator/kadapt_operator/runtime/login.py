"""Credentials for the API server, for kopf and for kadapt's own client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import yaml

from kadapt_operator.runtime.options import RuntimeOptions


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
