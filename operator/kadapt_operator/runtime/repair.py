"""Malformed status fields: dropped from the stored object, with a Warning Event that names them.

Reading the status is tolerant (:mod:`kadapt_operator.runtime.stored`): a top-level field that
no longer parses (a hand-edited ``restarts: many``, a ``startTime`` that is no time) is left
out, so no reconcile fails on it. Left in the API server it would be read, logged and left out
again on every tick, and the status would keep showing it. The first reconcile that sees one
deletes it from the status and says so in a ``StatusRepaired`` Warning Event; the cost ledger's
own entries are repaired in place (see :meth:`kadapt_operator.cost.CostLedger.from_status`).
"""

from __future__ import annotations

from kadapt_operator.runtime import events
from kadapt_operator.runtime.client import ADAPTATION_JOBS
from kadapt_operator.runtime.context import ReconcileContext
from kadapt_operator.runtime.stored import unparsable_status
from kadapt_operator.runtime.world import Runtime

#: How much of a dropped value the Event quotes.
QUOTE_CHARS = 80


async def drop_unparsable_status(rt: Runtime, ctx: ReconcileContext) -> None:
    """Delete the status fields that do not parse, and post one Event naming them."""
    dropped = unparsable_status(rt.body(ctx.key))
    if not dropped:
        return
    patch = {"status": dict.fromkeys(dropped)}
    rt.written[ctx.key] = await rt.api().patch(ADAPTATION_JOBS, ctx.namespace, ctx.name, patch, subresource="status")
    problems = [f"status.{key}: {repr(value)[:QUOTE_CHARS]} does not parse; dropped" for key, value in dropped.items()]
    events.post_repairs(ctx.meta, problems)
