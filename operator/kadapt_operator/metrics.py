"""The operator's Prometheus metrics: one explicit registry, methods the kopf handlers call.

Fleet metrics (jobs by phase, completions, restarts, reconciles, GPU seconds and cost by
namespace/queue/GPU type) live as long as the operator process. Per-job gauges (labels
``namespace``, ``job_name``) exist only while the job does: :meth:`OperatorMetrics.remove_job`
deletes every one of its series. The reference of every metric is the README's "Metrics reference"
section; a test scrapes this module's server and compares.

Use the module's :data:`METRICS` from handlers and :func:`serve_metrics` at start-up::

    from kadapt_operator.metrics import METRICS, JobSample, UsageKey, serve_metrics
    serve_metrics(settings.metrics_port)
    with METRICS.reconcile("poll"):
        ...
        METRICS.add_usage(UsageKey(ns, queue, gpu_type), accrual.added_gpu_seconds, added_cost)
        METRICS.observe_job(job_sample(namespace, name, status, spec.budget, allocated=gpus))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.metrics_core import Metric

from kadapt_operator import __version__
from kadapt_operator.api import PHASES, AdaptationJobStatus
from kadapt_trainer.config import BudgetSpec

#: Completion results (label ``result``).
RESULT_SUCCEEDED = "succeeded"
RESULT_FAILED = "failed"
#: Succeeded from an identical earlier job's recorded result (GitOps re-apply): no GPU used.
RESULT_REUSED = "reused"
RESULTS = (RESULT_SUCCEEDED, RESULT_FAILED, RESULT_REUSED)
#: Restart reasons (label ``reason``): a worker failed (counts against backoffLimit), or the
#: gang was disrupted (preemption, eviction, node drain; does not count).
RESTART_FAILURE = "failure"
RESTART_DISRUPTION = "disruption"
#: ``queue`` label value for jobs that name no queue.
NO_QUEUE = "none"

#: Seconds buckets for reconcile handler durations.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds buckets from creation to Running (scheduling, image pulls, queueing).
TIME_TO_RUNNING_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)

#: Labels of per-job series. Not ``job``: Prometheus gives every target a ``job`` label (the
#: scrape job) and would rename ours to ``exported_job``; ``job_name`` follows kube-state-metrics.
JOB_LABELS = ("namespace", "job_name")


#: Families a replica exports whatever its peering state: its own process's health. Every other
#: family (fleet counters, jobs by phase, per-job gauges) only the active replica exports.
PROCESS_FAMILIES = frozenset(
    {"kadapt_operator_info", "kadapt_operator_reconcile_duration_seconds", "kadapt_operator_reconcile_errors"}
)


class WithoutCreated:
    """A view of a registry without prometheus-client's ``*_created`` companion series.

    They double the exposition, are not in the metrics reference, and prometheus-client can
    only switch them off process-wide, which would change every other registry too.

    With ``fleet`` False (a paused peering replica) the view also leaves out everything but
    :data:`PROCESS_FAMILIES`: the paused replica's fleet counters and job gauges stopped
    moving when it paused, and exporting them next to the active replica's would show stale
    phases and count spend twice in any ``sum()`` over replicas. Its values are kept, not
    cleared: when it becomes active again its counters go on from where they stood.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.fleet = True

    def collect(self) -> Iterable[Metric]:
        """The registry's families, minus samples named ``*_created`` of counters and histograms."""
        for family in self._registry.collect():
            if not self.fleet and family.name not in PROCESS_FAMILIES:
                continue
            if family.type in ("counter", "histogram", "summary", "gaugehistogram"):
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


@dataclass(frozen=True)
class UsageKey:
    """Where GPU time is booked: namespace, Kueue queue (or :data:`NO_QUEUE`) and GPU type."""

    namespace: str
    queue: str | None
    gpu_type: str

    def labels(self) -> tuple[str, str, str]:
        """Label values in the order namespace, queue, gpu_type."""
        return (self.namespace, self.queue or NO_QUEUE, self.gpu_type)


#: Key of a JobSample field's metadata: the name and help of the gauge that shows it.
GAUGE = "gauge"


def _gauge(default: float | None, name: str, documentation: str) -> Any:
    """A :class:`JobSample` figure, shown by the per-job gauge ``name`` (labels namespace, job_name)."""
    return field(default=default, metadata={GAUGE: (name, documentation)})


@dataclass(frozen=True)
class JobSample:
    """What the per-job gauges show for one live job (all figures from its status).

    Each figure declares its gauge here, once: the registry, :meth:`OperatorMetrics.observe_job`
    and :meth:`OperatorMetrics.remove_job` all follow this list. ``projected_cost``,
    ``eta_seconds`` and ``budget_used_ratio`` are None when unknown (no ETA yet, no budget):
    their series are then absent, not zero.
    """

    namespace: str
    name: str
    phase: str
    progress_ratio: float = _gauge(0.0, "kadapt_job_progress_ratio", "Optimizer steps done / total steps (0 to 1).")
    allocated_gpus: int = _gauge(0, "kadapt_job_allocated_gpus", "GPUs held by the job's running pods.")
    gpu_seconds: float = _gauge(0.0, "kadapt_job_gpu_seconds", "GPU seconds the job has used (from its status ledger).")
    cost: float = _gauge(0.0, "kadapt_job_cost", "Cost of the job so far.")
    projected_cost: float | None = _gauge(
        None, "kadapt_job_projected_cost", "Projected cost at completion (absent until an ETA is known)."
    )
    eta_seconds: float | None = _gauge(
        None, "kadapt_job_eta_seconds", "Estimated seconds to completion (absent until known)."
    )
    budget_used_ratio: float | None = _gauge(
        None, "kadapt_job_budget_used_ratio", "Largest share of maxCost or maxGPUHours used (absent without budget)."
    )
    restarts: int = _gauge(0, "kadapt_job_restart_count", "Gang restarts of the job so far (status.restarts).")


def job_sample(
    namespace: str, name: str, status: AdaptationJobStatus, budget: BudgetSpec | None, *, allocated: int
) -> JobSample:
    """Build a :class:`JobSample` from a job's typed status and budget.

    Args:
        allocated: GPUs its running pods hold right now (:func:`kadapt_operator.cost.allocated_gpus`).
    """
    cost = status.cost
    ratios = []
    if budget is not None and budget.max_cost:
        ratios.append(cost.cost_so_far / budget.max_cost)
    if budget is not None and budget.max_gpu_hours:
        ratios.append(cost.gpu_seconds / 3600.0 / budget.max_gpu_hours)
    return JobSample(
        namespace=namespace,
        name=name,
        phase=status.phase or "Pending",
        progress_ratio=max(0.0, min(status.progress.percent / 100.0, 1.0)),
        allocated_gpus=allocated,
        gpu_seconds=cost.gpu_seconds,
        cost=cost.cost_so_far,
        projected_cost=cost.projected_cost,
        eta_seconds=status.progress.eta_seconds,
        budget_used_ratio=max(ratios) if ratios else None,
        restarts=status.restarts,
    )


class OperatorMetrics:
    """Every operator metric, registered in its own :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None, *, currency: str = "USD") -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        #: What is served: the registry without ``*_created`` series.
        self.exposition = WithoutCreated(self.registry)
        reg = self.registry
        self.info = Gauge(
            "kadapt_operator_info", "Operator build and settings; always 1.", ("version", "currency"), registry=reg
        )
        self.jobs = Gauge("kadapt_jobs", "AdaptationJobs by phase.", ("namespace", "phase"), registry=reg)
        self.completions = Counter(
            "kadapt_job_completions", "Jobs that finished, by result.", ("namespace", "result"), registry=reg
        )
        self.restarts = Counter(
            "kadapt_job_restarts", "Gang restarts, by reason (failure or disruption).",
            ("namespace", "reason"), registry=reg,
        )
        self.budget_exceeded = Counter(
            "kadapt_budget_exceeded", "Jobs suspended or refused by a budget, by reason.",
            ("namespace", "reason"), registry=reg,
        )
        self.reconcile_duration = Histogram(
            "kadapt_operator_reconcile_duration_seconds", "Time spent in one handler call.",
            ("handler",), buckets=RECONCILE_BUCKETS, registry=reg,
        )
        self.reconcile_errors = Counter(
            "kadapt_operator_reconcile_errors", "Handler calls that raised.", ("handler",), registry=reg
        )
        self.time_to_running = Histogram(
            "kadapt_job_time_to_running_seconds", "Seconds from a job's creation to its first Running phase.",
            ("namespace",), buckets=TIME_TO_RUNNING_BUCKETS, registry=reg,
        )
        usage = ("namespace", "queue", "gpu_type")
        self.gpu_seconds_total = Counter(
            "kadapt_gpu_seconds", "GPU seconds used (running time x GPUs requested).", usage, registry=reg
        )
        self.cost_total = Counter(
            "kadapt_gpu_cost", "GPU cost in the operator's currency (see kadapt_operator_info).", usage, registry=reg
        )
        self.job_phase = Gauge(
            "kadapt_job_phase", "1 for the live job's current phase, 0 for the others.",
            (*JOB_LABELS, "phase"), registry=reg,
        )
        #: One gauge per figure of :class:`JobSample`, by field name, in the order it lists them.
        self.per_job: dict[str, Gauge] = {}
        for figure in fields(JobSample):
            if GAUGE in figure.metadata:
                gauge_name, documentation = figure.metadata[GAUGE]
                self.per_job[figure.name] = Gauge(gauge_name, documentation, JOB_LABELS, registry=reg)
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}
        self._namespaces: set[str] = set()
        self._running_seen: set[tuple[str, str]] = set()
        self._completed: set[tuple[str, str]] = set()
        self.set_currency(currency)

    # --- settings -------------------------------------------------------------------------
    def set_currency(self, currency: str) -> None:
        """Publish the currency of every cost metric (``kadapt_operator_info``)."""
        self.info.clear()
        self.info.labels(__version__, currency).set(1)

    @property
    def exporting_fleet(self) -> bool:
        """Whether the fleet and per-job metrics are exported (False while a peer outranks this replica)."""
        return self.exposition.fleet

    def export_fleet(self, active: bool) -> None:
        """Export the fleet and per-job metrics only while this replica is the active one (see WithoutCreated)."""
        self.exposition.fleet = active

    def render(self) -> bytes:
        """The Prometheus text exposition, exactly as :func:`serve_metrics` serves it."""
        return generate_latest(self.exposition)

    # --- reconciles -----------------------------------------------------------------------
    def observe_reconcile(self, handler: str, seconds: float, *, error: bool = False) -> None:
        """Record one handler call's duration, and whether it raised."""
        self.reconcile_duration.labels(handler).observe(max(seconds, 0.0))
        if error:
            self.reconcile_errors.labels(handler).inc()

    @contextmanager
    def reconcile(self, handler: str) -> Iterator[None]:
        """Time the ``with`` block as one call of ``handler``; an exception counts as an error."""
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.observe_reconcile(handler, time.perf_counter() - start, error=True)
            raise
        self.observe_reconcile(handler, time.perf_counter() - start)

    # --- jobs -----------------------------------------------------------------------------
    def _recount(self, namespace: str) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for (ns, _), phase in self._phases.items():
            if ns == namespace:
                counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            self.jobs.labels(namespace, phase).set(n)

    def set_job_phase(self, namespace: str, name: str, phase: str) -> None:
        """Record a live job's phase (jobs-by-phase and ``kadapt_job_phase``)."""
        with self._lock:
            self._phases[(namespace, name)] = phase
            self._namespaces.add(namespace)
            self._recount(namespace)
            for known in {*PHASES, phase}:
                self.job_phase.labels(namespace, name, known).set(1 if known == phase else 0)

    def observe_job(self, sample: JobSample) -> None:
        """Set every per-job gauge from one sample (call after each status update)."""
        ns, name = sample.namespace, sample.name
        self.set_job_phase(ns, name, sample.phase)
        for figure, gauge in self.per_job.items():
            value = getattr(sample, figure)
            if value is None:
                _remove(gauge, ns, name)
            else:
                gauge.labels(ns, name).set(value)

    def remove_job(self, namespace: str, name: str) -> None:
        """Delete every series of a job that is gone (call from the delete handler)."""
        with self._lock:
            phase = self._phases.pop((namespace, name), None)
            for gauge in self.per_job.values():
                _remove(gauge, namespace, name)
            for known in {*PHASES, *([phase] if phase else [])}:
                _remove(self.job_phase, namespace, name, known)
            self._running_seen.discard((namespace, name))
            self._completed.discard((namespace, name))
            if namespace in self._namespaces:
                self._recount(namespace)

    def retain_jobs(self, live: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove the series of every job not in ``live`` (namespace, name); returns those removed.

        A safety net for deletions the operator did not see (no finalizer, missed watch event):
        call it with the jobs the operator knows to exist, e.g. once per tick.
        """
        keep = set(live)
        with self._lock:
            gone = [key for key in self._phases if key not in keep]
        for namespace, name in gone:
            self.remove_job(namespace, name)
        return gone

    def record_running(self, namespace: str, name: str, seconds_since_creation: float) -> None:
        """Observe time-to-running once per job (later calls for the same job are ignored)."""
        with self._lock:
            if (namespace, name) in self._running_seen:
                return
            self._running_seen.add((namespace, name))
        self.time_to_running.labels(namespace).observe(max(seconds_since_creation, 0.0))

    def record_completion(self, namespace: str, name: str, result: str) -> None:
        """Count a job's completion once (``succeeded``, ``failed`` or ``reused``)."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(map(repr, RESULTS))}, not {result!r}")
        with self._lock:
            if (namespace, name) in self._completed:
                return
            self._completed.add((namespace, name))
        self.completions.labels(namespace, result).inc()

    def record_restart(self, namespace: str, reason: str = RESTART_FAILURE) -> None:
        """Count one gang restart (``failure`` or ``disruption``)."""
        if reason not in (RESTART_FAILURE, RESTART_DISRUPTION):
            raise ValueError(f"reason must be {RESTART_FAILURE!r} or {RESTART_DISRUPTION!r}, not {reason!r}")
        self.restarts.labels(namespace, reason).inc()

    def record_budget_exceeded(self, namespace: str, reason: str) -> None:
        """Count a budget suspension or refusal (reason from ``kadapt_operator.cost``)."""
        self.budget_exceeded.labels(namespace, reason).inc()

    def add_usage(self, key: UsageKey, gpu_seconds: float, cost: float) -> None:
        """Add newly accrued GPU seconds and their cost (the ``added`` part of one accrual only)."""
        if gpu_seconds < 0 or cost < 0:
            raise ValueError("usage increments must be >= 0")
        labels = key.labels()
        self.gpu_seconds_total.labels(*labels).inc(gpu_seconds)
        self.cost_total.labels(*labels).inc(cost)


def _remove(metric: Gauge, *labels: str) -> None:
    """Remove a labelled series if it exists."""
    with suppress(KeyError):
        metric.remove(*labels)


#: The operator process's metrics (handlers import this one).
METRICS = OperatorMetrics()


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server (a daemon thread)."""

    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(port: int, *, metrics: OperatorMetrics | None = None, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``metrics`` (default :data:`METRICS`) at ``http://addr:port/metrics``; port 0 picks one."""
    chosen = metrics if metrics is not None else METRICS
    server, thread = start_http_server(port, addr=addr, registry=chosen.exposition)
    return MetricsServer(port=int(server.server_port), _server=server, _thread=thread)
