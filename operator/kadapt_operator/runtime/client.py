"""The operator's writes to the API server, through the official ``kubernetes`` client.

kopf watches; writes to other objects than the one a handler is called for (the children,
the owner's status from a pod event) go through the typed API classes of the ``kubernetes``
package (``CoreV1Api``, ``BatchV1Api``, ``CustomObjectsApi``), on the same
``Configuration`` kopf logged in with (:mod:`kadapt_operator.runtime.login`): one source of
credentials, with the client's exec/OIDC plugins, proxies and certificate handling. The
client is synchronous: every call runs in a worker thread (``asyncio.to_thread``), never on
kopf's event loop. Objects go in and come out as plain dicts (the API server's JSON).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

#: Merge patches only: the emulator and every API server understand them the same way.
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "kadapt-operator"


class ApiError(Exception):
    """An API request that failed; ``status`` is the HTTP code (0 for connection errors)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Kind:
    """A resource kadapt writes: group ("" for core), version, plural, and its ``kind``."""

    group: str
    version: str
    plural: str
    kind: str


CONFIG_MAPS = Kind("", "v1", "configmaps", "ConfigMap")
SERVICES = Kind("", "v1", "services", "Service")
PODS = Kind("", "v1", "pods", "Pod")
JOBS = Kind("batch", "v1", "jobs", "Job")
#: Read only: the Job controller's Events on a batch Job (why it cannot create pods).
EVENTS = Kind("", "v1", "events", "Event")
ADAPTATION_JOBS = Kind("kadapt.dev", "v1alpha1", "adaptationjobs", "AdaptationJob")

_KINDS = {k.kind: k for k in (CONFIG_MAPS, SERVICES, JOBS, PODS, ADAPTATION_JOBS)}
#: Method name stems of the typed API classes (``create_namespaced_<stem>`` ...).
_STEMS = {CONFIG_MAPS: "config_map", SERVICES: "service", PODS: "pod", JOBS: "job", EVENTS: "event"}


def kind_of(obj: dict[str, Any]) -> Kind:
    """The resource of a manifest from its ``kind``.

    Raises:
        ValueError: for a kind kadapt never writes.
    """
    try:
        return _KINDS[str(obj.get("kind"))]
    except KeyError:
        raise ValueError(f"kadapt does not manage objects of kind {obj.get('kind')!r}") from None


def _message(exc: ApiException) -> tuple[str, str]:
    """The Status object's message and reason from an ApiException's body."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.body or exc.reason or ""), str(exc.reason or "")
    if not isinstance(body, dict):
        return str(body), str(exc.reason or "")
    return str(body.get("message") or exc.reason or ""), str(body.get("reason") or exc.reason or "")


class KubeClient:
    """The typed API classes on one ``ApiClient``; every call off the event loop."""

    def __init__(self, configuration: k8s.Configuration, user_agent: str = USER_AGENT) -> None:
        configuration.client_side_validation = False  # the API server validates; the client only carries
        self._api = k8s.ApiClient(configuration)
        self._api.user_agent = user_agent
        self._core = k8s.CoreV1Api(self._api)
        self._batch = k8s.BatchV1Api(self._api)
        self._custom = k8s.CustomObjectsApi(self._api)

    async def close(self) -> None:
        """Close the connection pool."""
        await asyncio.to_thread(self._api.close)

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result = await asyncio.to_thread(method, *args, **kwargs)
        except ApiException as exc:
            message, reason = _message(exc)
            raise ApiError(int(exc.status or 0), message, reason) from None
        except HTTPError as exc:
            raise ApiError(0, f"{getattr(method, '__name__', method)}: {exc}") from exc
        out: dict[str, Any] = self._api.sanitize_for_serialization(result) or {}
        return out

    def _typed(self, verb: str, kind: Kind, subresource: str | None = None) -> Callable[..., Any]:
        api = self._batch if kind.group == "batch" else self._core
        suffix = f"_{subresource}" if subresource else ""
        return getattr(api, f"{verb}_namespaced_{_STEMS[kind]}{suffix}")

    async def serves(self, kind: Kind) -> bool:
        """Whether the API server serves ``kind`` (its CRD is installed), from API discovery."""
        try:
            found = await self._call(self._custom.get_api_resources, kind.group, kind.version)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.get("name") == kind.plural for r in found.get("resources") or [])

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            if kind == ADAPTATION_JOBS:
                return await self._call(
                    self._custom.get_namespaced_custom_object, kind.group, kind.version, namespace, kind.plural, name
                )
            return await self._call(self._typed("read", kind), name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a manifest to its collection (409 surfaces as ApiError)."""
        kind = kind_of(obj)
        namespace = obj["metadata"]["namespace"]
        if kind == ADAPTATION_JOBS:
            create = self._custom.create_namespaced_custom_object
            return await self._call(create, kind.group, kind.version, namespace, kind.plural, obj)
        return await self._call(self._typed("create", kind), namespace, obj)

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch an object (or its status with ``subresource='status'``)."""
        if kind == ADAPTATION_JOBS:
            method = (
                self._custom.patch_namespaced_custom_object_status
                if subresource == "status"
                else self._custom.patch_namespaced_custom_object
            )
            args = (kind.group, kind.version, namespace, kind.plural, name, patch)
            return await self._call(method, *args, _content_type=MERGE_PATCH)
        return await self._call(
            self._typed("patch", kind, subresource), name, namespace, patch, _content_type=MERGE_PATCH
        )

    async def list_namespaced(
        self, kind: Kind, namespace: str, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """The objects of a built-in kind in ``namespace`` (narrowed by ``field_selector`` where served).

        Callers filter again on what they need: an API server emulator may ignore the selector.
        """
        kwargs = {"field_selector": field_selector} if field_selector else {}
        found = await self._call(self._typed("list", kind), namespace, **kwargs)
        return list(found.get("items") or [])

    async def read_peering(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        """kopf's peering object (``KopfPeering`` in ``namespace``, or the ``ClusterKopfPeering``).

        Read by listing: the peering RBAC (kopf's own) grants list/watch/patch, not get.
        """
        group, version = "kopf.dev", "v1"
        if namespace is None:
            found = await self._call(self._custom.list_cluster_custom_object, group, version, "clusterkopfpeerings")
        else:
            found = await self._call(
                self._custom.list_namespaced_custom_object, group, version, namespace, "kopfpeerings"
            )
        return next((i for i in found.get("items") or [] if (i.get("metadata") or {}).get("name") == name), None)

    async def delete(self, kind: Kind, namespace: str, name: str, propagation: str = "Background") -> bool:
        """Delete an object; False when it was already gone."""
        options = k8s.V1DeleteOptions(propagation_policy=propagation)
        try:
            if kind == ADAPTATION_JOBS:
                delete = self._custom.delete_namespaced_custom_object
                await self._call(delete, kind.group, kind.version, namespace, kind.plural, name, body=options)
            else:
                await self._call(self._typed("delete", kind), name, namespace, body=options)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
