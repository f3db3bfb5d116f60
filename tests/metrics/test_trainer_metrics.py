"""The trainer's rank-0 /metrics, served by its telemetry server, scraped over HTTP.

A real training run is scraped by Prometheus in ``test_prometheus_e2e.py``; here the server
is fed by hand so that every metric, the GPU ones included, has a value to check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric

from kadapt_trainer import telemetry as telemetry_mod
from kadapt_trainer.config import ProgressReport

from .promref import MetricRef

Scrape = Callable[[str], dict[str, Metric]]
GPU_METRICS = {"kadapt_trainer_gpu_utilization_ratio", "kadapt_trainer_gpu_memory_used_bytes"}


def feed(metrics: Any) -> None:
    """Set every trainer metric the way a training loop does."""
    m = metrics
    m.steps.inc(3)
    m.target_steps.set(10)
    m.epoch.set(0.3)
    m.train_loss.set(1.25)
    m.eval_loss.set(1.5)
    m.eval_accuracy.set(0.5)
    m.eval_perplexity.set(4.0)
    m.samples_per_second.set(64.0)
    m.tokens_per_second.set(1024.0)
    m.step_duration.observe(0.2)
    m.trainable.set(1000)
    m.parameters.set(100000)
    m.last_checkpoint.set(1.7e9)
    if getattr(m, "gpu_util", None) is not None:
        m.gpu_util.labels(gpu="0").set(0.75)
        m.gpu_mem.labels(gpu="0").set(2**30)


@pytest.fixture(params=[False, True], ids=["cpu", "gpu"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[bool, int]]:
    with_gpu = bool(request.param)
    telemetry = telemetry_mod.Telemetry(ProgressReport(state="training"), with_gpu=with_gpu)
    feed(telemetry.metrics)
    port = telemetry.serve(0)
    assert port
    try:
        yield with_gpu, port
    finally:
        telemetry.close()


def test_trainer_metrics_match_the_reference(
    served: tuple[bool, int], scrape_url: Scrape, check_reference: Callable[..., None],
    reference: dict[str, MetricRef],
) -> None:
    with_gpu, port = served
    scraped = scrape_url(f"http://127.0.0.1:{port}/metrics")
    created = sorted(n for n in scraped if n.endswith("_created") and n.startswith("kadapt_trainer_"))
    families = {n: f for n, f in scraped.items() if n not in created}
    check_reference(families, "kadapt_")
    trainer_refs = {n for n in reference if n.startswith("kadapt_trainer_")}
    expected = trainer_refs if with_gpu else trainer_refs - GPU_METRICS
    assert set(families) == expected, (
        f"unexpected: {sorted(set(families) - expected)}; missing: {sorted(expected - set(families))}"
    )
    steps = families["kadapt_trainer_steps_total"]
    assert [s.value for s in steps.samples if s.name == "kadapt_trainer_steps_total"] == [3.0]
    if with_gpu:
        util = families["kadapt_trainer_gpu_utilization_ratio"]
        assert [(s.labels, s.value) for s in util.samples] == [({"gpu": "0"}, 0.75)]
    # prometheus-client adds a `<name>_created` series per counter and histogram unless the
    # exposition filters them, as both kadapt's trainer and operator do.
    assert not created, f"trainer /metrics also exposes {created}, not in the reference"


def test_progress_and_metrics_share_one_port(served: tuple[bool, int]) -> None:
    import json
    import urllib.request

    _, port = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=10) as resp:
        report = ProgressReport.model_validate(json.loads(resp.read()))
    assert report.state == "training"
