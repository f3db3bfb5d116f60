"""Create-or-adopt: the only way the operator writes children.

Never check-then-create (two operator replicas, or one restarted mid-flight, would race):
POST first; on 409 read what exists and adopt it when it is ours or unowned with our
labels, patching only what may change (a Job's ``suspend``, a ConfigMap's data). A child
owned by something else is a conflict the user must resolve; it is never overwritten.

Why not server-side apply (``PATCH application/apply-patch+yaml``)? The Kubernetes API emulator
every operator test runs against (KMock 0.8) does not implement it: it answers 404 for an object
that does not exist yet (server-side apply would create it) and merges the body as a plain merge
patch, with no field managers or conflicts. Create-or-adopt behaves the same on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kadapt_operator.labels import LABEL_JOB_NAME
from kadapt_operator.runtime.client import ApiError, KubeClient, kind_of
from kadapt_operator.runtime.status import job_view
from kadapt_operator.runtime.stored import meta_of


class ChildConflict(Exception):
    """A child's name is taken by an object kadapt does not own."""


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller owner, if any."""
    return meta_of(obj).controller_uid


def mutable_patch(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an existing child that kadapt keeps in line with the desired one."""
    kind = desired.get("kind")
    patch: dict[str, Any] = {}
    if kind == "Job":
        want = job_view(desired).suspended
        if job_view(existing).suspended != want:
            patch["spec"] = {"suspend": want}
    elif kind == "ConfigMap" and existing.get("data") != desired.get("data"):
        patch["data"] = desired.get("data")
    return patch


async def apply(client: KubeClient, desired: dict[str, Any]) -> dict[str, Any]:
    """Create ``desired``, or adopt and align the existing object of that name; the object as stored.

    Raises:
        ChildConflict: the name is used by an object owned by someone else, or not ours.
        ApiError: any other API failure (the caller retries).
    """
    try:
        return await client.create(desired)
    except ApiError as exc:
        if exc.status != 409:
            raise
    meta = desired["metadata"]
    kind = kind_of(desired)
    existing = await client.get(kind, meta.get("namespace"), meta["name"])
    if existing is None:  # deleted between our POST and GET: try once more
        return await client.create(desired)
    owner_wanted = controller_uid(desired)
    owner_found = controller_uid(existing)
    labels = meta_of(existing).labels
    patch = mutable_patch(desired, existing)
    if owner_found is not None and owner_found != owner_wanted:
        raise ChildConflict(
            f"{desired['kind']} {meta['name']!r} exists and is owned by another object (uid {owner_found}); "
            "delete it or rename the AdaptationJob"
        )
    if owner_found is None:
        if labels.get(LABEL_JOB_NAME) != meta["labels"].get(LABEL_JOB_NAME):
            raise ChildConflict(
                f"{desired['kind']} {meta['name']!r} exists and was not created by kadapt; "
                "delete it or rename the AdaptationJob"
            )
        patch.setdefault("metadata", {})["ownerReferences"] = meta.get("ownerReferences")
        patch["metadata"]["labels"] = meta.get("labels")
        return await client.patch(kind, meta.get("namespace"), meta["name"], patch)  # adopted
    if patch:
        return await client.patch(kind, meta.get("namespace"), meta["name"], patch)  # ours, aligned
    return existing  # unchanged


async def apply_all(client: KubeClient, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply children: all but the last at once, then the last (the Job, whose pods need the others)."""
    *first, last = objects
    done = list(await asyncio.gather(*(apply(client, obj) for obj in first)))
    return [*done, await apply(client, last)]
