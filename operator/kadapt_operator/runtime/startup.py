"""The entry point that runs the operator: kadapt's handlers on kopf, with explicit settings."""

from __future__ import annotations

import threading

import kopf
from kopf._core.engines.peering import Identity as peering_identity  # kopf.operator's identity type

from kadapt_operator.metrics import OperatorMetrics
from kadapt_operator.runtime.handlers import build_registry
from kadapt_operator.runtime.options import RuntimeOptions, configure
from kadapt_operator.runtime.peering import own_identity
from kadapt_operator.runtime.world import Runtime
from kadapt_operator.settings import OperatorSettings


async def run_operator(
    settings: OperatorSettings,
    options: RuntimeOptions,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    metrics: OperatorMetrics | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Run the kadapt operator until ``stop_flag`` is set (or forever).

    Args:
        metrics: where this operator records its metrics (a fresh registry when None).
        runtime: the shared state to run with (tests pass one to watch what it handled);
            built from ``settings``, ``options`` and ``metrics`` when None.
    """
    if runtime is None:
        runtime = Runtime(settings=settings, options=options, metrics=metrics or OperatorMetrics())
    runtime.identity = runtime.identity or own_identity()
    registry = build_registry(runtime)
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, options)
    # Peering (standalone, name, priority) is in kopf_settings already (configure); kopf would
    # only copy the same values over them again if they were passed here too.
    await kopf.operator(
        registry=registry,
        settings=kopf_settings,
        clusterwide=options.clusterwide,
        namespaces=list(options.namespaces),
        liveness_endpoint=options.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(),
        identity=peering_identity(runtime.identity),
    )
