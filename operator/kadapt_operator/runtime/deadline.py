"""``activeDeadlineSeconds`` without the time a job spent suspended or queued after it started.

The deadline counts from the first running pod (``status.startTime``). A job that the user, a
budget or Kueue (a preemption) holds afterwards must not use its deadline up while it waits:
:func:`kadapt_operator.runtime.decide.track_deadline` stops and restarts the clock, and this
module keeps the clock where a restarted operator finds it, on the AdaptationJob:

* ``kadapt.dev/deadline-paused-seconds``: seconds of finished pauses;
* ``kadapt.dev/deadline-paused-since``: when the pause in progress began (RFC 3339), absent
  while the clock runs.

They are written only when a pause begins or ends, never per tick.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from kadapt_operator import k8s
from kadapt_operator.runtime import decide
from kadapt_operator.runtime.context import ReconcileContext
from kadapt_operator.runtime.options import PREFIX
from kadapt_operator.runtime.world import Runtime

log = logging.getLogger("kadapt.operator")

ANN_PAUSED_SECONDS = f"{PREFIX}/deadline-paused-seconds"
ANN_PAUSED_SINCE = f"{PREFIX}/deadline-paused-since"


def clock_of(annotations: Mapping[str, str]) -> decide.DeadlineClock:
    """The deadline's clock as stored; an unreadable value counts as no pause (and is logged)."""
    raw_seconds = annotations.get(ANN_PAUSED_SECONDS)
    seconds = 0.0
    if raw_seconds is not None:
        try:
            seconds = float(raw_seconds)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            log.warning("annotation %s=%r is not a number of seconds >= 0; counted as 0", ANN_PAUSED_SECONDS,
                        raw_seconds)
            seconds = 0.0
    try:
        since = k8s.parse_time(annotations.get(ANN_PAUSED_SINCE))
    except (TypeError, ValueError):
        log.warning("annotation %s is not an RFC 3339 time; the pause in progress is not counted", ANN_PAUSED_SINCE)
        since = None
    return decide.DeadlineClock(seconds, since)


def annotations_of(clock: decide.DeadlineClock) -> dict[str, str | None]:
    """The merge-patch of the two annotations for ``clock`` (None deletes the pause mark)."""
    since = k8s.format_time(clock.paused_since) if clock.paused_since is not None else None
    return {ANN_PAUSED_SECONDS: f"{clock.paused_seconds:.3f}", ANN_PAUSED_SINCE: since}


async def track(rt: Runtime, ctx: ReconcileContext) -> decide.DeadlineClock:
    """Stop or restart the deadline's clock for the phase just observed; store it when it moved."""
    stored = clock_of(ctx.meta.annotations)
    clock = decide.track_deadline(stored, started=ctx.status.start_time is not None, phase=ctx.phase, now=ctx.now)
    if clock != stored:
        await rt.annotate(ctx.key, annotations_of(clock))
    return clock
