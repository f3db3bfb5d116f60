"""How a trainer pod ended, read from its container status: the pure classification the
reconcile's restart/failure decision uses.

The trainer exits 2 for input that no retry can fix (bad config, data or model, or a loss
that diverged to NaN/inf) and writes its one-line cause to the container's termination
message (``terminationMessagePath``; the launcher keeps the 2 that torchrun would turn into 1).
Restarting the gang would only repeat the failure on a new GPU start ``backoffLimit`` times,
so such a pod fails the job at once, with the cause in the ``Failed`` condition and an Event.

Contract for the caller (the reconcile's restart decision):

- ``classify_pod(pod)`` takes one Pod object as the API returns it (a mapping) and returns
  ``None`` while the trainer container has not terminated, else a frozen ``Termination``;
- ``permanent_failure(pods)`` returns the first pod (lowest completion index) whose trainer
  ended with ``Outcome.BAD_INPUT``, or ``None``: when it returns one, fail the job now with
  ``termination.cause`` (reason ``BadInput``) and do not restart the gang; peers that then
  exit 1 on the broken rendezvous do not change that;
- ``final_summary(pods)`` returns rank 0's final figures (a ``FinalSummary``) once its trainer
  exited 0, or ``None``: on success the trainer writes them to the same termination message,
  so the finished job's status shows the true final step, loss and metrics instead of the
  last ``/progress`` poll; ``final_progress`` and ``baseline_condition`` map them to status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kadapt_operator.api import Progress
from kadapt_operator.k8s import COMPLETION_INDEX, TRAINER_CONTAINER
from kadapt_operator.runtime import status as st
from kadapt_trainer.config import EXIT_BAD_INPUT, EXIT_STOPPED
from kadapt_trainer.final_summary import FinalSummary

#: The trainer's own error line, found when the kubelet fell back to the log's tail.
_TRAINER_ERROR = re.compile(r"kadapt-trainer: error: (.+)")
#: Longest cause kept (a condition message should stay readable).
MAX_CAUSE = 1024


class Outcome(StrEnum):
    """What the trainer container's exit means for the job."""

    SUCCEEDED = "Succeeded"
    #: 143: checkpointed and stopped (preemption, suspend, budget): not a failure.
    STOPPED = "Stopped"
    #: 2: bad input or a diverged loss: permanent, fail the job now, no restarts.
    BAD_INPUT = "BadInput"
    #: Anything else (crash, OOM, lost peer): may be retried from the checkpoint.
    CRASHED = "Crashed"

    @classmethod
    def of(cls, exit_code: int) -> Outcome:
        """What the trainer's exit code means (the codes are the trainer's: ``kadapt_trainer.config``)."""
        return {0: cls.SUCCEEDED, EXIT_STOPPED: cls.STOPPED, EXIT_BAD_INPUT: cls.BAD_INPUT}.get(exit_code, cls.CRASHED)


@dataclass(frozen=True)
class Termination:
    """One pod's trainer container, terminated: what the kubelet reported; what it means is derived."""

    pod: str
    #: The pod's completion index (its rank's worker); None when it carries none.
    index: int | None
    exit_code: int
    reason: str | None = None
    #: The termination message as written (on success: the trainer's final summary).
    message: str = field(default="", compare=False, repr=False)

    @property
    def outcome(self) -> Outcome:
        """What the exit code means for the job."""
        return Outcome.of(self.exit_code)

    @property
    def cause(self) -> str:
        """Why it failed, in one line (empty on success): see :func:`cause_of`."""
        return "" if self.outcome == Outcome.SUCCEEDED else cause_of(self.message, self.exit_code, self.reason)

    @property
    def permanent(self) -> bool:
        """True when no restart can fix it: fail the job at once."""
        return self.outcome == Outcome.BAD_INPUT


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("state", "lastState"):
        terminated = (status.get(key) or {}).get("terminated")
        if terminated:
            return terminated
    return None


def cause_of(message: str | None, exit_code: int, reason: str | None) -> str:
    """One line: the trainer's own cause if the message carries it, else what the exit says."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    for line in reversed(lines):
        own = _TRAINER_ERROR.search(line)
        if own:
            return own.group(1).strip()[:MAX_CAUSE]
    if lines and (exit_code == EXIT_BAD_INPUT or len(lines) == 1):
        return lines[0][:MAX_CAUSE]
    if reason == "OOMKilled":
        return f"the trainer ran out of memory (OOMKilled, exit code {exit_code}); request more memory"
    if exit_code == EXIT_BAD_INPUT:
        return f"bad input (exit code {exit_code}); see the trainer's log"
    return f"the trainer exited with code {exit_code}" + (f" ({reason})" if reason else "")


def classify_pod(pod: Mapping[str, Any], container: str = TRAINER_CONTAINER) -> Termination | None:
    """How this pod's trainer container ended; None while it has not terminated."""
    meta = pod.get("metadata") or {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == container), None)
    if status is None:
        return None
    terminated = _terminated(status)
    if terminated is None or terminated.get("exitCode") is None:
        return None
    code = int(terminated["exitCode"])
    reason = terminated.get("reason")
    raw_index = (meta.get("annotations") or {}).get(COMPLETION_INDEX)
    index = int(raw_index) if isinstance(raw_index, str) and raw_index.isdigit() else None
    message = str(terminated.get("message") or "")
    return Termination(str(meta.get("name", "")), index, code, reason, message)


def permanent_failure(pods: Iterable[Mapping[str, Any]], container: str = TRAINER_CONTAINER) -> Termination | None:
    """The gang's first pod that failed for good (bad input), or None: then restarts may help."""
    found = [t for t in (classify_pod(p, container) for p in pods) if t is not None and t.permanent]
    if not found:
        return None
    return min(found, key=lambda t: (t.index is None, t.index or 0, t.pod))


def final_summary(pods: Iterable[Mapping[str, Any]], container: str = TRAINER_CONTAINER) -> FinalSummary | None:
    """Rank 0's final figures, once its trainer exited 0 with a summary; None otherwise.

    Only rank 0 (completion index 0) writes one; an older trainer, or a message the kubelet
    replaced with a log tail, gives None and the status keeps its last poll.
    """
    for pod in pods:
        ended = classify_pod(pod, container)
        if ended is not None and ended.index == 0 and ended.outcome == Outcome.SUCCEEDED:
            return FinalSummary.parse(ended.message)
    return None


def final_progress(summary: FinalSummary, last: Progress) -> Progress:
    """``status.progress`` of a finished job: the final step, loss and metrics, 100%, no ETA.

    The trainer can end before ``total_steps`` (early stopping): the job is still done, so the
    percentage is 100; the step says where it stopped. Unknown fields keep the last poll's value.
    """
    return Progress(
        step=summary.step,
        total_steps=summary.total_steps or last.total_steps,
        epoch=round(summary.epoch, 4),
        percent=100.0,
        eta_seconds=0.0,
        samples_per_second=last.samples_per_second,
        loss=last.loss if summary.loss is None else round(summary.loss, 4),
        eval_metrics={k: round(float(v), 4) for k, v in sorted(summary.eval_metrics.items())}
        or dict(last.eval_metrics),
    )


#: What the Warning says when the model is no better than the majority-class baseline.
NO_BETTER_MESSAGE = "the trained model is no better than always predicting the majority class"
#: Said when the trainer's own sentence (with the figures) did not reach the summary.
NO_BETTER_ADVICE = "it has not learned the task; check the labels, the learning rate and the amount of data"


def baseline_condition(summary: FinalSummary) -> st.CondUpdate | None:
    """``BetterThanBaseline`` from the final validation report; None when it does not apply.

    False (reason ``NoBetterThanBaseline``, a Warning Event) when the model does not beat the
    majority class: the job still Succeeded, but must not read as a quiet success.
    """
    if summary.better_than_baseline is None:
        return None
    if summary.better_than_baseline:
        return st.CondUpdate(
            st.BETTER_THAN_BASELINE,
            st.TRUE,
            st.Reason.BEATS_BASELINE,
            "the model beats always predicting the majority class on the validation data",
        )
    # The trainer's sentence names the split, both accuracies and the majority class.
    detail = next((w for w in reversed(summary.warnings) if "most frequent class" in w), NO_BETTER_ADVICE)
    message = f"{NO_BETTER_MESSAGE}: {detail}"
    return st.CondUpdate(st.BETTER_THAN_BASELINE, st.FALSE, st.Reason.NO_BETTER_THAN_BASELINE, message[:MAX_CAUSE])
