"""A small async Kubernetes API client on the credentials kopf logged in with.

kopf handles watching; writes to other objects than the one a handler is called for
(children, the owner's status from a pod event) need a client. This one reuses kopf's
``ConnectionInfo`` (from the login handler), so there is one source of credentials, and
speaks only what kadapt needs: get, create, merge-patch, delete.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

#: Merge patches only: the emulator and every API server understand them the same way.
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """An API request that failed; ``status`` is the HTTP code (0 for connection errors)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Kind:
    """A resource's URL parts: group ("" for core), version, plural."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """``/api[s]/.../[namespaces/ns/]plural[/name[/sub]]``."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        out = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{self.plural}"
        if name:
            out += f"/{name}"
        if subresource:
            out += f"/{subresource}"
        return out


CONFIG_MAPS = Kind("", "v1", "configmaps")
SERVICES = Kind("", "v1", "services")
PODS = Kind("", "v1", "pods")
JOBS = Kind("batch", "v1", "jobs")
ADAPTATION_JOBS = Kind("kadapt.dev", "v1alpha1", "adaptationjobs")

_KINDS = {"ConfigMap": CONFIG_MAPS, "Service": SERVICES, "Job": JOBS, "Pod": PODS, "AdaptationJob": ADAPTATION_JOBS}


def kind_of(obj: dict[str, Any]) -> Kind:
    """The resource of a manifest from its ``kind``.

    Raises:
        ValueError: for a kind kadapt never writes.
    """
    try:
        return _KINDS[str(obj.get("kind"))]
    except KeyError:
        raise ValueError(f"kadapt does not manage objects of kind {obj.get('kind')!r}") from None


def _ssl_context(info: kopf.ConnectionInfo, tmpdir: str) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        ctx = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None, cadata=ca_data)
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data and info.private_key_data:
        cert, key = f"{tmpdir}/cert.pem", f"{tmpdir}/key.pem"
        for path, data in ((cert, info.certificate_data), (key, info.private_key_data)):
            raw = data if isinstance(data, bytes) else data.encode()
            if not raw.lstrip().startswith(b"-----"):
                raw = base64.b64decode(raw)
            with open(path, "wb") as fh:
                fh.write(raw)
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


class KubeClient:
    """One aiohttp session to the API server; used from the operator's own event loop."""

    def __init__(self, info: kopf.ConnectionInfo, *, timeout: float = 30.0) -> None:
        self._info = info
        self._tmp = tempfile.TemporaryDirectory(prefix="kadapt-client-")
        headers = {"User-Agent": "kadapt-operator"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        connector = aiohttp.TCPConnector(ssl=_ssl_context(info, self._tmp.name), limit=64)
        self._session = aiohttp.ClientSession(
            base_url=info.server.rstrip("/") + "/",
            headers=headers,
            auth=auth,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def close(self) -> None:
        """Close the session and forget the key material."""
        await self._session.close()
        self._tmp.cleanup()

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            async with self._session.request(
                method, path.lstrip("/"), json=body, headers=headers, params=params
            ) as resp:
                data: Any = await resp.json(content_type=None) if resp.content_length != 0 else None
                if resp.status >= 400:
                    msg = data.get("message", "") if isinstance(data, dict) else str(data)
                    reason = data.get("reason", "") if isinstance(data, dict) else ""
                    raise ApiError(resp.status, msg, reason)
                return data
        except aiohttp.ClientError as exc:
            raise ApiError(0, f"{method} {path}: {exc}") from exc

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await self._call("GET", kind.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a manifest to its collection (409 surfaces as ApiError)."""
        kind = kind_of(obj)
        result: dict[str, Any] = await self._call(
            "POST", kind.path(obj["metadata"].get("namespace")), obj, "application/json"
        )
        return result

    async def patch(
        self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch an object (or its status with ``subresource='status'``)."""
        result: dict[str, Any] = await self._call("PATCH", kind.path(namespace, name, subresource), patch, MERGE_PATCH)
        return result

    async def delete(self, kind: Kind, namespace: str | None, name: str, propagation: str = "Background") -> bool:
        """Delete an object; False when it was already gone."""
        try:
            await self._call(
                "DELETE",
                kind.path(namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
                "application/json",
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
