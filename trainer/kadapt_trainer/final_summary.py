"""Rank 0's final result, compact, in the container's termination message.

The operator learns a job's progress by polling ``/progress``; the last poll before the pods
exit is up to one poll interval old, so a Succeeded job would show a stale step, loss and
metrics. The kubelet keeps what a container wrote to its ``terminationMessagePath`` (at most
4096 bytes) in the pod's status, so on success rank 0 writes a one-line JSON summary there and
the operator reads the true final figures from the pod, with no extra request to the trainer.

Pure and torch-free: the operator imports :class:`FinalSummary` to parse the message.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kadapt_trainer.config import ProgressReport
from kadapt_trainer.errors import TERMINATION_MESSAGE_LIMIT, termination_log_path

#: Marks a termination message as a final summary, not a failure's one-line cause.
SUMMARY_KIND = "kadapt-final"
#: Longest single warning kept (the full list is in kadapt-result.json).
MAX_WARNING_CHARS = 300
#: Most metrics kept: eval_metrics holds the headline figures; the per-class report stays in the result file.
MAX_METRICS = 16


class FinalSummary(BaseModel):
    """The final figures of a successful run: what the job's status shows once it has finished.

    camelCase-free on purpose: snake_case, like ``/progress`` and ``kadapt-result.json``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["kadapt-final"] = "kadapt-final"
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    eval_metrics: dict[str, float] = Field(default_factory=dict)
    #: False when the final validation metric is not above the majority-class baseline.
    better_than_baseline: bool | None = None
    warnings: list[str] = Field(default_factory=list)
    #: How many warnings the result file holds (the list here may be cut to fit 4096 bytes).
    warnings_total: int = 0
    output_uri: str | None = None
    last_checkpoint: str | None = None
    #: What trained: a run shorter than one poll interval would otherwise end with none in status.
    trainable_params: int = 0
    total_params: int = 0
    strategy: str | None = None

    @classmethod
    def of(cls, report: ProgressReport) -> FinalSummary:
        """The summary of the final report (headline metrics, warnings cut to a readable length)."""
        metrics = dict(sorted(report.eval_metrics.items())[:MAX_METRICS])
        return cls(
            step=report.step,
            total_steps=report.total_steps,
            epoch=round(report.epoch, 4),
            loss=None if report.loss is None else round(report.loss, 6),
            eval_metrics={k: round(float(v), 6) for k, v in metrics.items()},
            better_than_baseline=report.better_than_baseline,
            warnings=[w[:MAX_WARNING_CHARS] for w in report.warnings],
            warnings_total=len(report.warnings),
            output_uri=report.output_uri,
            last_checkpoint=report.last_checkpoint,
            trainable_params=report.trainable_params,
            total_params=report.total_params,
            strategy=report.strategy,
        )

    def to_message(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """One line of compact JSON of at most ``limit`` UTF-8 bytes (Kubernetes' cap).

        The oldest warnings are dropped first (the last ones judge the result, e.g. the
        majority-class baseline), then metrics, until it fits; the figures the status needs
        (step, loss, the baseline flag) always stay.
        """
        summary = self
        while True:
            line = json.dumps(summary.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)
            if len(line.encode("utf-8")) <= limit:
                return line
            if summary.warnings:
                summary = summary.model_copy(update={"warnings": summary.warnings[1:]})
            elif summary.eval_metrics:
                summary = summary.model_copy(update={"eval_metrics": dict(list(summary.eval_metrics.items())[:-1])})
            else:
                return line.encode("utf-8")[:limit].decode("utf-8", "ignore")  # unreachable in practice

    @classmethod
    def parse(cls, message: str | None) -> FinalSummary | None:
        """The summary in a termination message; None when the message is anything else.

        A failure's cause, a log tail (``FallbackToLogsOnError``) or a cut-off JSON line all
        give None: the caller then keeps what it knew.
        """
        for line in reversed((message or "").strip().splitlines()):
            line = line.strip()
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError, ValidationError):
                raw = json.loads(line)
                if isinstance(raw, dict) and raw.get("kind") == SUMMARY_KIND:
                    return cls.model_validate(raw)
        return None


def write_final_summary(report: ProgressReport, env: Mapping[str, str] | None = None) -> None:
    """Write the summary of ``report`` to the termination message; best effort, like the causes."""
    path = termination_log_path(env)
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.write_text(FinalSummary.of(report).to_message() + "\n", encoding="utf-8")
