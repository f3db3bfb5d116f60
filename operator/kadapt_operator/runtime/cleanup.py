"""``ttlSecondsAfterFinished``: remove a finished job's children, never the AdaptationJob itself.

Deleting the AdaptationJob would look, to Argo CD's self-heal or a Flux re-apply, like drift:
they would create it again and it would train again, at full GPU cost, every TTL period. So
the TTL removes what the finished job no longer needs (the batch Job and with it its pods, the
ConfigMap and the Service) and keeps the AdaptationJob, with its status (result, metrics, cost),
as the record of the run. An annotation marks the clean-up done, so later ticks do nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from kadapt_operator import labels
from kadapt_operator.runtime.client import CONFIG_MAPS, JOBS, SERVICES
from kadapt_operator.runtime.options import PREFIX
from kadapt_operator.runtime.stored import meta_of
from kadapt_operator.runtime.world import Key, Runtime

log = logging.getLogger("kadapt.operator")

#: When the TTL removed the children (RFC 3339); present means: nothing left to remove.
ANN_CHILDREN_REMOVED = f"{PREFIX}/children-removed"


def children_removed(rt: Runtime, key: Key) -> bool:
    """Whether the TTL already removed this job's children."""
    return bool(meta_of(rt.body(key)).annotations.get(ANN_CHILDREN_REMOVED))


async def remove_children(rt: Runtime, key: Key, now: datetime, ttl: int | None) -> None:
    """Delete the finished job's Job (its pods go with it), ConfigMap and Service; keep the job."""
    if children_removed(rt, key):
        return
    namespace, name = key
    await rt.api().delete(JOBS, namespace, labels.batch_job_name(name))
    await rt.api().delete(CONFIG_MAPS, namespace, labels.config_map_name(name))
    await rt.api().delete(SERVICES, namespace, labels.service_name(name))
    await rt.annotate(key, {ANN_CHILDREN_REMOVED: now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    log.info("%s/%s: finished %ss ago (ttlSecondsAfterFinished): removed its Job, pods, ConfigMap and Service; "
             "the AdaptationJob stays as the record of the run", namespace, name, ttl)
