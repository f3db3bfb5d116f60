"""The operator's /metrics, scraped over HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client.metrics_core import Metric

from kadapt_operator.api import AdaptationJobStatus
from kadapt_operator.cost import REASON_MAX_COST
from kadapt_operator.metrics import (
    NO_QUEUE,
    PHASES,
    RESTART_DISRUPTION,
    RESTART_FAILURE,
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    JobSample,
    MetricsServer,
    OperatorMetrics,
    UsageKey,
    job_sample,
    serve_metrics,
)
from kadapt_trainer.config import BudgetSpec

Scrape = Callable[[str], dict[str, Metric]]


@pytest.fixture
def served() -> Iterator[tuple[OperatorMetrics, MetricsServer]]:
    metrics = OperatorMetrics(currency="EUR")
    server = serve_metrics(0, metrics=metrics, addr="127.0.0.1")
    try:
        yield metrics, server
    finally:
        server.close()


def value(families: dict[str, Metric], name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` with exactly these labels (None if absent)."""
    family = families.get(name)
    if family is None:
        return None
    sample_name = name if family.type != "histogram" else name + "_count"
    found = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else None


def exercise(metrics: OperatorMetrics) -> None:
    """Drive every method the handlers call, as a short life of two jobs would."""
    with metrics.reconcile("create"):
        metrics.set_job_phase("team-a", "sst2", "Created")
    with pytest.raises(RuntimeError), metrics.reconcile("poll"):
        raise RuntimeError("API server went away")
    metrics.record_running("team-a", "sst2", 42.0)
    metrics.record_running("team-a", "sst2", 99.0)  # once per job
    metrics.observe_job(
        JobSample("team-a", "sst2", "Running", progress_ratio=0.25, allocated_gpus=8, gpu_seconds=3600.0,
                  cost=2.5, projected_cost=10.0, eta_seconds=900.0, budget_used_ratio=0.5, restarts=1)
    )
    metrics.observe_job(JobSample("team-b", "llm", "Suspended", progress_ratio=0.5))
    metrics.add_usage(UsageKey("team-a", None, "a100"), 3600.0, 2.5)
    metrics.add_usage(UsageKey("team-a", "gpu-queue", "h100"), 60.0, 0.2)
    metrics.record_restart("team-a", RESTART_FAILURE)
    metrics.record_restart("team-a", RESTART_DISRUPTION)
    metrics.record_budget_exceeded("team-b", REASON_MAX_COST)
    metrics.record_completion("team-b", "old", RESULT_FAILED)
    metrics.record_completion("team-b", "old", RESULT_FAILED)  # once per job
    metrics.record_completion("team-a", "done", RESULT_SUCCEEDED)


def test_every_operator_metric_is_in_the_reference_with_its_type_and_labels(
    served: tuple[OperatorMetrics, MetricsServer], scrape_url: Scrape, check_reference: Callable[..., None],
    reference: dict[str, object],
) -> None:
    metrics, server = served
    exercise(metrics)
    families = scrape_url(f"http://127.0.0.1:{server.port}/metrics")
    check_reference(families, "kadapt_")
    operator_refs = {n for n in reference if not n.startswith("kadapt_trainer_")}
    assert operator_refs <= families.keys(), f"in the reference but never exposed: {operator_refs - families.keys()}"
    assert not any(name.endswith("_created") for name in families)


def test_values_after_a_short_life(
    served: tuple[OperatorMetrics, MetricsServer], scrape_url: Scrape
) -> None:
    metrics, server = served
    exercise(metrics)
    f = scrape_url(f"http://127.0.0.1:{server.port}/metrics")
    assert value(f, "kadapt_operator_info", version=_version(), currency="EUR") == 1
    assert value(f, "kadapt_jobs", namespace="team-a", phase="Running") == 1
    assert value(f, "kadapt_jobs", namespace="team-a", phase="Created") == 0
    assert value(f, "kadapt_jobs", namespace="team-b", phase="Suspended") == 1
    assert {s.labels["phase"] for s in f["kadapt_jobs"].samples if s.labels["namespace"] == "team-a"} == set(PHASES)
    assert value(f, "kadapt_job_completions_total", namespace="team-b", result="failed") == 1
    assert value(f, "kadapt_job_completions_total", namespace="team-a", result="succeeded") == 1
    assert value(f, "kadapt_job_restarts_total", namespace="team-a", reason="failure") == 1
    assert value(f, "kadapt_job_restarts_total", namespace="team-a", reason="disruption") == 1
    assert value(f, "kadapt_budget_exceeded_total", namespace="team-b", reason=REASON_MAX_COST) == 1
    assert value(f, "kadapt_operator_reconcile_errors_total", handler="poll") == 1
    assert value(f, "kadapt_operator_reconcile_errors_total", handler="create") is None
    assert value(f, "kadapt_operator_reconcile_duration_seconds", handler="create") == 1
    assert value(f, "kadapt_operator_reconcile_duration_seconds", handler="poll") == 1
    assert value(f, "kadapt_job_time_to_running_seconds", namespace="team-a") == 1
    ttr_sum = [s.value for s in f["kadapt_job_time_to_running_seconds"].samples if s.name.endswith("_sum")]
    assert ttr_sum == [42.0]
    assert value(f, "kadapt_gpu_seconds_total", namespace="team-a", queue=NO_QUEUE, gpu_type="a100") == 3600
    assert value(f, "kadapt_gpu_cost_total", namespace="team-a", queue="gpu-queue", gpu_type="h100") == 0.2
    job = {"namespace": "team-a", "job_name": "sst2"}
    assert value(f, "kadapt_job_progress_ratio", **job) == 0.25
    assert value(f, "kadapt_job_allocated_gpus", **job) == 8
    assert value(f, "kadapt_job_gpu_seconds", **job) == 3600
    assert value(f, "kadapt_job_cost", **job) == 2.5
    assert value(f, "kadapt_job_projected_cost", **job) == 10
    assert value(f, "kadapt_job_eta_seconds", **job) == 900
    assert value(f, "kadapt_job_budget_used_ratio", **job) == 0.5
    assert value(f, "kadapt_job_restart_count", **job) == 1
    assert value(f, "kadapt_job_phase", **job, phase="Running") == 1
    assert value(f, "kadapt_job_phase", **job, phase="Created") == 0
    # unknown figures are absent, not zero
    assert value(f, "kadapt_job_projected_cost", namespace="team-b", job_name="llm") is None
    assert value(f, "kadapt_job_budget_used_ratio", namespace="team-b", job_name="llm") is None


def test_remove_job_deletes_every_series_of_that_job(
    served: tuple[OperatorMetrics, MetricsServer], scrape_url: Scrape
) -> None:
    metrics, server = served
    exercise(metrics)
    metrics.remove_job("team-a", "sst2")
    f = scrape_url(f"http://127.0.0.1:{server.port}/metrics")
    leftovers = [
        (name, s.labels) for name, fam in f.items() for s in fam.samples if s.labels.get("job_name") == "sst2"
    ]
    assert leftovers == []
    assert value(f, "kadapt_jobs", namespace="team-a", phase="Running") == 0
    assert value(f, "kadapt_job_progress_ratio", namespace="team-b", job_name="llm") == 0.5
    # fleet counters keep what was spent
    assert value(f, "kadapt_gpu_seconds_total", namespace="team-a", queue=NO_QUEUE, gpu_type="a100") == 3600


def test_a_projection_that_becomes_unknown_is_removed(
    served: tuple[OperatorMetrics, MetricsServer], scrape_url: Scrape
) -> None:
    metrics, server = served
    metrics.observe_job(JobSample("ns", "j", "Running", projected_cost=3.0, eta_seconds=10.0))
    metrics.observe_job(JobSample("ns", "j", "Suspended"))
    f = scrape_url(f"http://127.0.0.1:{server.port}/metrics")
    assert value(f, "kadapt_job_projected_cost", namespace="ns", job_name="j") is None
    assert value(f, "kadapt_job_eta_seconds", namespace="ns", job_name="j") is None
    assert value(f, "kadapt_jobs", namespace="ns", phase="Suspended") == 1
    assert value(f, "kadapt_jobs", namespace="ns", phase="Running") == 0


def test_bad_labels_are_refused() -> None:
    metrics = OperatorMetrics()
    with pytest.raises(ValueError, match="result"):
        metrics.record_completion("ns", "j", "ok")
    with pytest.raises(ValueError, match="reason"):
        metrics.record_restart("ns", "oops")
    with pytest.raises(ValueError, match=">= 0"):
        metrics.add_usage(UsageKey("ns", None, "a100"), -1.0, 0.0)


def test_job_sample_reads_status_and_budget() -> None:
    status = AdaptationJobStatus.model_validate(
        {
            "phase": "Running",
            "restarts": 2,
            "progress": {"percent": 40.0, "etaSeconds": 600.0},
            "cost": {"gpuSeconds": 7200.0, "costSoFar": 5.0, "projectedCost": 9.0},
        }
    )
    budget = BudgetSpec(max_cost=10.0, max_gpu_hours=4.0)
    s = job_sample("team-a", "sst2", status, budget, allocated=8)
    assert s == JobSample("team-a", "sst2", "Running", progress_ratio=0.4, allocated_gpus=8, gpu_seconds=7200.0,
                          cost=5.0, projected_cost=9.0, eta_seconds=600.0, budget_used_ratio=0.5, restarts=2)
    fresh = job_sample("default", "new", AdaptationJobStatus(), None, allocated=0)
    assert (fresh.phase, fresh.budget_used_ratio, fresh.projected_cost, fresh.allocated_gpus) == (
        "Pending", None, None, 0,
    )


def _version() -> str:
    from kadapt_operator import __version__

    return __version__


def test_render_is_what_is_served(served: tuple[OperatorMetrics, MetricsServer]) -> None:
    import urllib.request

    metrics, server = served
    exercise(metrics)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
        served_text = resp.read()
    assert served_text == metrics.render()
    assert b"_created" not in served_text


def test_retain_jobs_removes_the_series_of_jobs_not_seen_any_more(
    served: tuple[OperatorMetrics, MetricsServer], scrape_url: Scrape
) -> None:
    metrics, server = served
    exercise(metrics)
    assert metrics.retain_jobs([("team-b", "llm")]) == [("team-a", "sst2")]
    f = scrape_url(f"http://127.0.0.1:{server.port}/metrics")
    jobs = {s.labels["job_name"] for fam in f.values() for s in fam.samples if "job_name" in s.labels}
    assert jobs == {"llm"}
    assert metrics.retain_jobs([("team-b", "llm")]) == []


def test_a_paused_replica_exports_only_its_process_metrics_and_keeps_its_counts() -> None:
    m = OperatorMetrics()
    m.add_usage(UsageKey("team-a", "gpus", "nvidia-a100"), 36.0, 0.072)
    m.set_job_phase("team-a", "tune", "Running")
    with m.reconcile("tick"):
        pass
    m.export_fleet(False)
    names = {line.split("{")[0].split(" ")[0] for line in m.render().decode().splitlines() if not line.startswith("#")}
    assert {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in names} == {
        "kadapt_operator_info", "kadapt_operator_reconcile_duration_seconds"
    }
    assert not m.exporting_fleet
    m.export_fleet(True)
    text = m.render().decode()
    assert 'kadapt_gpu_seconds_total{gpu_type="nvidia-a100",namespace="team-a",queue="gpus"} 36.0' in text
    assert 'kadapt_jobs{namespace="team-a",phase="Running"} 1.0' in text
