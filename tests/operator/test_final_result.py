"""A finished job's status tells the truth: the trainer's final result, not the last poll.

Issue 13.9 and the operator side of issue 12.9. Rank 0 writes its final figures (compact JSON)
to the container's termination message; the operator reads them from the pod once the gang
succeeded. Pure tests of the summary (trainer side) and of its parsing and mapping (operator
side, ``runtime/termination.py``), then the whole path against the emulator with a real
operator: a stale ``/progress`` poll (step 54 of 162) is replaced by the final figures, and a
model no better than the majority class gets a Warning Event and a condition, still Succeeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kadapt_operator.api import Progress
from kadapt_operator.runtime import status as st
from kadapt_operator.runtime.events import WARNING, event_type
from kadapt_operator.runtime.termination import (
    NO_BETTER_ADVICE,
    baseline_condition,
    final_progress,
    final_summary,
)
from kadapt_trainer.config import ProgressReport
from kadapt_trainer.errors import TERMINATION_LOG_ENV, TERMINATION_MESSAGE_LIMIT
from kadapt_trainer.final_summary import FinalSummary, write_final_summary
from tests.harness import checks
from tests.harness.emulator import AJOBS, JOBS, PODS, Cluster, OperatorHandle, complete_job_status, job_manifest
from tests.harness.emulator import terminated_status as terminated
from tests.harness.progress import serve_progress
from tests.operator.test_termination import pod

NS = "team-a"
BASELINE_SENTENCE = (
    "validation accuracy 0.5000 is not better than always predicting the most frequent class 'pos' (0.5000): "
    "the model has not learned the task; check the labels, the learning rate and the amount of data"
)


def final_report(**overrides: Any) -> ProgressReport:
    """The trainer's final report as ``recipe.save`` builds it (162 of 162 steps)."""
    fields: dict[str, Any] = {
        "state": "succeeded",
        "step": 162,
        "total_steps": 162,
        "epoch": 3.0,
        "loss": 0.1234567,
        "eval_metrics": {"accuracy": 0.91, "macro_f1": 0.9, "baseline_accuracy": 0.5, "eval_loss": 0.25},
        "better_than_baseline": True,
        "warnings": [],
        "output_uri": "pvc://out/final",
        "last_checkpoint": "/mnt/kadapt/pvc/out/final/checkpoints/step-00000162",
        "trainable_params": 1_925,
        "total_params": 22_700_000,
        "strategy": "lora",
        "evaluation": {"validation": {"confusion_matrix": [[1] * 50] * 50}},
    }
    fields.update(overrides)
    return ProgressReport.model_validate(fields)


# -- the trainer's side: one compact line that always fits -------------------------------------
def test_the_summary_round_trips_through_the_termination_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    write_final_summary(final_report(), env={TERMINATION_LOG_ENV: str(log)})
    text = log.read_text()
    assert text.count("\n") == 1 and "confusion_matrix" not in text  # headline figures only
    summary = FinalSummary.parse(text)
    assert summary is not None
    assert (summary.step, summary.total_steps, summary.epoch, summary.loss) == (162, 162, 3.0, 0.123457)
    assert summary.eval_metrics["accuracy"] == 0.91 and summary.better_than_baseline is True
    assert summary.output_uri == "pvc://out/final"
    assert (summary.trainable_params, summary.total_params, summary.strategy) == (1_925, 22_700_000, "lora")


def test_many_long_warnings_are_cut_to_fit_and_the_verdict_stays() -> None:
    warnings = [f"warning {i}: " + "x" * 1000 for i in range(40)] + [BASELINE_SENTENCE]
    line = FinalSummary.of(final_report(better_than_baseline=False, warnings=warnings)).to_message()
    assert len(line.encode()) <= TERMINATION_MESSAGE_LIMIT
    summary = FinalSummary.parse(line)
    assert summary is not None and summary.better_than_baseline is False and summary.step == 162
    assert summary.warnings[-1] == BASELINE_SENTENCE and summary.warnings_total == 41
    assert all(len(w) <= 300 for w in summary.warnings)


@pytest.mark.parametrize(
    "message",
    [None, "", "dataset.uri: no such file", "kadapt: step 3\nTraceback ...", '{"step": 5}', '{"kind": "kadapt-final"'],
)
def test_anything_but_a_summary_parses_to_none(message: str | None) -> None:
    assert FinalSummary.parse(message) is None


# -- the operator's side: pure parsing and mapping ----------------------------------------------
def summary_line(**overrides: Any) -> str:
    return FinalSummary.of(final_report(**overrides)).to_message()


def test_rank_0s_summary_once_its_trainer_exited_0() -> None:
    found = final_summary([pod(1, 0, summary_line(step=1)), pod(0, 0, summary_line())])
    assert found is not None and found.step == 162
    assert final_summary([pod(0, None), pod(1, 0, summary_line())]) is None  # rank 0 still running
    assert final_summary([pod(0, 1, summary_line())]) is None  # crashed after writing: not a result
    assert final_summary([pod(0, 0)]) is None  # an older trainer: no summary, the last poll stays


def test_final_progress_replaces_the_stale_poll() -> None:
    stale = Progress(step=54, total_steps=162, epoch=1.0, percent=33.33, eta_seconds=120.0, loss=0.9,
                     samples_per_second=10.0, eval_metrics={"accuracy": 0.5})
    summary = FinalSummary.parse(summary_line())
    assert summary is not None
    final = final_progress(summary, stale)
    assert (final.step, final.total_steps, final.percent, final.eta_seconds) == (162, 162, 100.0, 0.0)
    assert final.loss == 0.1235 and final.eval_metrics["accuracy"] == 0.91 and final.epoch == 3.0
    early = FinalSummary.parse(summary_line(step=100))  # early stopping: done, at step 100
    assert early is not None and final_progress(early, stale).percent == 100.0


def test_the_baseline_verdict_becomes_a_condition() -> None:
    warnings = ["maxLength clamped", BASELINE_SENTENCE]
    worse = FinalSummary.parse(summary_line(better_than_baseline=False, warnings=warnings))
    assert worse is not None
    cond = baseline_condition(worse)
    assert cond is not None
    assert (cond.type, cond.status, cond.reason) == ("BetterThanBaseline", st.FALSE, "NoBetterThanBaseline")
    assert cond.message.startswith("the trained model is no better than always predicting the majority class")
    assert BASELINE_SENTENCE in cond.message and event_type(cond.reason) == WARNING
    bare = FinalSummary.parse(summary_line(better_than_baseline=False))
    assert bare is not None and (c := baseline_condition(bare)) is not None and NO_BETTER_ADVICE in c.message
    good = FinalSummary.parse(summary_line())
    assert good is not None and (g := baseline_condition(good)) is not None and g.status == st.TRUE
    unknown = FinalSummary.parse(summary_line(better_than_baseline=None))  # causal-lm, no validation
    assert unknown is not None and baseline_condition(unknown) is None


# -- against the emulator, with the real operator ----------------------------------------------
#: The last poll before the pods exit: a third of the way.
STALE = {"state": "training", "step": 54, "total_steps": 162, "epoch": 1.0, "loss": 0.9,
         "eta_seconds": 300.0, "eval_metrics": {"accuracy": 0.55}}


@pytest.fixture()
def stale_progress() -> Iterator[int]:
    """Rank 0's /progress on a free local port, stuck at step 54 of 162."""
    with serve_progress(STALE) as (port, _):
        yield port


def finish(cluster: Cluster, name: str, port: int, message: str) -> None:
    """Train to the stale poll, then rank 0 exits 0 with ``message``, rank 1 exits 0, the Job completes."""
    cluster.create(AJOBS, job_manifest(name, NS))
    pods = checks.start_gang(cluster, name, NS, progress_port=port)
    cluster.wait_for(
        lambda: checks.status_of(cluster, name, NS).get("progress", {}).get("step") == 54, message="the stale poll"
    )
    cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], terminated(0, message=message))
    cluster.set_status(PODS, NS, pods[1]["metadata"]["name"], terminated(0))
    cluster.set_status(JOBS, NS, name, complete_job_status(2))


def test_a_succeeded_job_shows_the_final_figures_not_the_last_poll(
    cluster: Cluster, operator: OperatorHandle, stale_progress: int
) -> None:
    finish(cluster, "truthful", stale_progress, summary_line(output_uri="pvc://out/truthful"))
    status = cluster.wait_for(
        lambda: (s := checks.status_of(cluster, "truthful", NS)).get("progress", {}).get("step") == 162 and s,
        message="the final step in status",
    )
    assert status["phase"] == "Succeeded"
    progress = status["progress"]
    figures = (progress["totalSteps"], progress["percent"], progress["epoch"], progress["loss"])
    assert figures == (162, 100.0, 3.0, 0.1235)
    assert progress["evalMetrics"]["accuracy"] == 0.91 and progress["etaSeconds"] == 0.0
    assert status["output"] == {"uri": "pvc://out/truthful", "metrics": progress["evalMetrics"]}
    assert status["lastCheckpoint"] == "pvc://out/final/checkpoints/step-00000162"
    # The stale poll carried no parameter counts (as a run over before the first poll): the summary's.
    assert status["parameters"] == {"trainable": 1_925, "total": 22_700_000, "percent": 0.0085}
    assert status["strategy"]["resolved"] == "lora"
    verdict = checks.condition(cluster, "truthful", NS, "BetterThanBaseline")
    assert verdict is not None and verdict["status"] == "True"


def test_no_better_than_the_majority_class_is_a_warning_on_a_succeeded_job(
    cluster: Cluster, operator: OperatorHandle, stale_progress: int
) -> None:
    message = summary_line(better_than_baseline=False, warnings=[BASELINE_SENTENCE],
                           eval_metrics={"accuracy": 0.5, "baseline_accuracy": 0.5})
    finish(cluster, "chance", stale_progress, message)
    verdict = cluster.wait_for(
        lambda: checks.condition(cluster, "chance", NS, "BetterThanBaseline"), message="BetterThanBaseline condition"
    )
    assert (verdict["status"], verdict["reason"]) == ("False", "NoBetterThanBaseline")
    assert "no better than always predicting the majority class" in verdict["message"]
    assert BASELINE_SENTENCE in verdict["message"]
    event = cluster.wait_for(
        lambda: next(
            (e for e in checks.events_for(cluster, "chance", NS) if e.get("reason") == "NoBetterThanBaseline"), None
        ),
        message="NoBetterThanBaseline Event",
    )
    assert event["type"] == "Warning" and "majority class" in event["message"]
    status = checks.status_of(cluster, "chance", NS)
    assert status["phase"] == "Succeeded" and status["progress"]["step"] == 162
    assert status["progress"]["evalMetrics"] == {"accuracy": 0.5, "baseline_accuracy": 0.5}


def test_a_summary_seen_after_the_jobs_completion_still_reaches_status(
    cluster: Cluster, operator: OperatorHandle, stale_progress: int
) -> None:
    # The Job and pod watches are separate streams: the Job's completion may arrive first.
    cluster.create(AJOBS, job_manifest("late-pods", NS))
    pods = checks.start_gang(cluster, "late-pods", NS, progress_port=stale_progress)
    cluster.wait_for(
        lambda: checks.status_of(cluster, "late-pods", NS).get("progress", {}).get("step") == 54, message="stale poll"
    )
    cluster.set_status(JOBS, NS, "late-pods", complete_job_status(2))
    cluster.wait_for(lambda: checks.status_of(cluster, "late-pods", NS).get("phase") == "Succeeded", message="done")
    cluster.set_status(PODS, NS, pods[1]["metadata"]["name"], terminated(0))
    cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], terminated(0, message=summary_line()))
    status = cluster.wait_for(
        lambda: (s := checks.status_of(cluster, "late-pods", NS)).get("progress", {}).get("step") == 162 and s,
        message="the final step in status",
    )
    assert status["phase"] == "Succeeded" and status["progress"]["percent"] == 100.0
    assert status["output"]["metrics"]["accuracy"] == 0.91


def test_a_gang_that_ran_and_ended_between_two_looks_keeps_its_start_time(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    # A short job can start and succeed between two of the operator's looks: it never sees the
    # pods Running. Its wall time (status.startTime to completion, what `kadapt compare` reports)
    # comes from the pods' own start times, not from nothing.
    started = "2026-01-01T10:00:00Z"
    cluster.create(AJOBS, job_manifest("quick", NS))
    job = cluster.wait_for(lambda: cluster.get(JOBS, NS, "quick"), message="the Job")
    pods = [cluster.make_pod(job, i) for i in range(2)]
    cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], terminated(0, started_at=started, message=summary_line()))
    cluster.set_status(PODS, NS, pods[1]["metadata"]["name"], terminated(0, started_at=started))
    cluster.set_status(JOBS, NS, "quick", complete_job_status(2))
    status = cluster.wait_for(
        lambda: (s := checks.status_of(cluster, "quick", NS)).get("progress", {}).get("step") == 162 and s,
        message="the final figures in status",
    )
    assert status["phase"] == "Succeeded"
    assert status.get("startTime") == started
