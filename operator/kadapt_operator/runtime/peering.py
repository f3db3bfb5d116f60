"""Which peered replica may act: kopf's peering rule, applied to kadapt's own periodic task.

kopf pauses a replica's handlers while another live replica of the same peering has a higher
(or the same) priority. kadapt's periodic task (cost accrual, budget stops, restart backoff,
deadlines, TTL) is not a kopf handler, so kopf does not pause it; it asks here before every
round instead, with the same rule over the same peering objects (``KopfPeering`` per served
namespace, or the ``ClusterKopfPeering``): only the active replica acts and counts fleet cost.

The replica's identity is chosen here and handed to kopf (``kopf.operator(identity=...)``),
so both read the same name in the peering objects' ``status``.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

#: Environment variable kopf reads for the replica's identity (the chart sets the pod name).
POD_ID_ENV = "POD_ID"
#: kopf's default peer lifetime (seconds) when a peer entry names none.
DEFAULT_LIFETIME = 60


def own_identity(env: Mapping[str, str] | None = None) -> str:
    """This replica's peering identity: ``$POD_ID`` in a pod, else user@host with a random suffix."""
    env = os.environ if env is None else env
    if env.get(POD_ID_ENV):
        return env[POD_ID_ENV]
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d%H%M%S")
    return f"{getpass.getuser()}@{socket.gethostname()}/{stamp}/{secrets.token_hex(2)}"


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_active(peers: Mapping[str, Any], *, identity: str, priority: int, now: datetime) -> bool:
    """Whether kopf lets this replica work, from one peering object's ``status``.

    ``peers`` maps identity -> ``{priority, lifetime, lastseen}``. A peer is alive until
    ``lastseen + lifetime``. The replica is paused while another live peer has a higher
    priority, or the same one (kopf then pauses every replica of that priority).
    """
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        seen = _parse(info.get("lastseen"))
        try:
            lifetime = int(info.get("lifetime", DEFAULT_LIFETIME))
            other_priority = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if seen is not None and seen + timedelta(seconds=lifetime) <= now:
            continue  # dead
        if other_priority >= priority:
            return False
    return True


def active_everywhere(
    peerings: Iterable[Mapping[str, Any] | None], *, identity: str, priority: int, now: datetime
) -> bool:
    """Active in every peering object the replica belongs to (kopf pauses on any conflict)."""
    return all(
        is_active((p or {}).get("status") or {}, identity=identity, priority=priority, now=now) for p in peerings
    )
