"""Read rank 0's ``/progress`` and turn it into AdaptationJob status fields.

The fetch is the only impure part; :func:`progress_status` is a pure mapping into the
status models, so the reconcile compares it with the current status and patches only what
changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from pydantic import ValidationError

from kadapt_operator.api import Parameters, Progress, ResolvedStrategy
from kadapt_operator.runtime.status import PodView
from kadapt_trainer.config import DEFAULT_PVC_ROOT, ProgressReport

#: A trainer busy in a step may answer late; the next poll will ask again.
FETCH_TIMEOUT_SECONDS = 3.0


def rank0(pods: Iterable[PodView]) -> PodView | None:
    """The pod of completion index 0 that has an IP (the one serving ``/progress``)."""
    for pod in pods:
        if pod.index == 0 and pod.ip and pod.phase == "Running":
            return pod
    return None


async def fetch(
    session: aiohttp.ClientSession, ip: str, port: int, timeout: float = FETCH_TIMEOUT_SECONDS
) -> ProgressReport | None:
    """GET ``http://ip:port/progress``; None when the trainer is not answering (yet)."""
    host = f"[{ip}]" if ":" in ip else ip
    try:
        async with session.get(f"http://{host}:{port}/progress", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            data = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    try:
        return ProgressReport.model_validate(data)
    except ValidationError:
        return None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class ReportStatus:
    """The status parts one ``/progress`` report fills in."""

    progress: Progress
    parameters: Parameters
    strategy: ResolvedStrategy | None = None
    last_checkpoint: str | None = None


def progress_status(report: ProgressReport) -> ReportStatus:
    """Status parts from one report: progress, parameters, strategy, lastCheckpoint."""
    percent = 100.0 * report.step / report.total_steps if report.total_steps else 0.0
    progress = Progress(
        step=report.step,
        total_steps=report.total_steps,
        epoch=round(report.epoch, 4),
        percent=round(percent, 2),
        eta_seconds=_round(report.eta_seconds, 1),
        samples_per_second=_round(report.samples_per_second, 2),
        loss=_round(report.loss),
        eval_metrics={k: round(float(v), 4) for k, v in sorted(report.eval_metrics.items())},
    )
    parameters = parameters_of(report.trainable_params, report.total_params)
    strategy = ResolvedStrategy(resolved=report.strategy, reason=report.strategy_reason) if report.strategy else None
    checkpoint = user_uri(report.last_checkpoint) if report.last_checkpoint else None
    return ReportStatus(progress, parameters, strategy, checkpoint)


def parameters_of(trainable: int, total: int) -> Parameters:
    """``status.parameters``: trainable and total counts, and the trainable share in percent."""
    percent = 100.0 * trainable / total if total else 0.0
    return Parameters(trainable=trainable, total=total, percent=round(percent, 4))


def user_uri(path: str) -> str:
    """A path inside a training pod as the user wrote it: ``/mnt/kadapt/pvc/claim/x`` -> ``pvc://claim/x``.

    The trainer reports where it wrote, as it sees it; status speaks the manifest's language.
    Paths outside the claims' mount (a ``file://`` output, already a URI) are returned unchanged.
    """
    root = DEFAULT_PVC_ROOT.rstrip("/") + "/"
    if path.startswith(root):
        return "pvc://" + path[len(root):]
    return path
