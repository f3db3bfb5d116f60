"""One reconcile's context: what it read, when, and the status it is building.

Built once by :func:`kadapt_operator.runtime.reconcile.read_world` and passed through
every step, so that no step reads the clock or the indices again and no step needs more
than two arguments. The steps fill in the second half (decisions and the status being
built); the last step writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kadapt_operator import cost as costing
from kadapt_operator.api import AdaptationJob, AdaptationJobStatus
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.decide import Trigger
from kadapt_operator.runtime.stored import StoredMeta
from kadapt_operator.runtime.world import Key


@dataclass
class ReconcileContext:
    """Everything one reconcile of one AdaptationJob reads and decides."""

    key: Key
    trigger: Trigger
    #: The operator's clock, read once.
    now: datetime
    #: The AdaptationJob's metadata as stored (the freshest copy known).
    meta: StoredMeta
    #: The parsed, validated spec.
    job: AdaptationJob
    #: ``status`` as stored, before this reconcile.
    old: AdaptationJobStatus
    #: ``status`` as this reconcile builds it (starts as a copy of ``old``); the last step writes the difference.
    status: AdaptationJobStatus
    #: The current incarnation of the batch Job (None: not created, or the failed one being deleted).
    batch: dict[str, Any] | None
    #: uid of the Job incarnation whose failure was already handled.
    handled_job_uid: str | None
    #: When the gang may be recreated after a failure (None: no restart pending).
    restart_after: datetime | None
    #: Every pod labelled with the job's name (all incarnations).
    pods: list[dict[str, Any]]
    intervals: list[costing.PodInterval]
    #: Price per GPU-hour of the job's GPU type.
    price: float

    # -- what the steps decide ---------------------------------------------------------------
    #: Conditions as they should be now (merged into ``old``'s by the write step).
    updates: list[st.CondUpdate] = field(default_factory=list)
    #: Why the Job should be suspended (user, budget), or None.
    suspend_reason: str | None = None
    #: Whether this reconcile created the children.
    created_now: bool = False
    views: list[st.PodView] = field(default_factory=list)
    job_view: st.JobView | None = None
    observation: st.Observation | None = None
    phase: str = st.PENDING
    #: Whether this reconcile already posted the Event naming the malformed status it repaired.
    repairs_reported: bool = False

    @property
    def namespace(self) -> str:
        """The job's namespace."""
        return self.key[0]

    @property
    def name(self) -> str:
        """The job's name."""
        return self.key[1]

    @property
    def generation(self) -> int | None:
        """The spec generation acted on (``status.observedGeneration``): not one whose changes are ignored."""
        return self.status.observed_generation if self.status.observed_generation is not None else self.meta.generation
