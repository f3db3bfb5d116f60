"""The floor for the operator benchmarks: a minimal kopf operator, one handler that only patches status.

Run by ``benchmarks/operator_bench.py`` as ``kopf run --standalone -n NS benchmarks/operator_floor.py``.
It shares kadapt's only non-default kopf choice that changes API traffic (no per-handler
Events), so the ratio measures what kadapt adds: validation, rendering, three children,
watching Jobs and pods, status derivation.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="floor.kadapt.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="floor.kadapt.dev")


@kopf.on.resume("kadapt.dev", "v1alpha1", "adaptationjobs")
@kopf.on.create("kadapt.dev", "v1alpha1", "adaptationjobs")
def seen(patch: kopf.Patch, **_: Any) -> None:
    patch.status["phase"] = "Created"
