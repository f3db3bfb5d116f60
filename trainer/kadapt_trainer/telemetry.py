"""Rank 0's progress endpoint: ``/progress`` (JSON), ``/metrics`` (Prometheus), ``/healthz``.

Updating is a few attribute writes under a lock, so it can run every step; the HTTP server
lives in a daemon thread and reads a snapshot. Metrics use their own CollectorRegistry so
that nothing else in the process (or a second trainer in a test) leaks into them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Metric, generate_latest

from kadapt_trainer.config import ProgressReport

log = logging.getLogger(__name__)

#: Env var that overrides ``progressPort`` (the local runner hands out free ports).
PORT_ENV = "KADAPT_PROGRESS_PORT"
PREFIX = "kadapt_trainer"
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The trainer's Prometheus metrics, in a registry of their own."""

    def __init__(self, with_gpu: bool) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.steps = Counter(f"{PREFIX}_steps", "Optimizer steps done.", registry=r)
        self.target_steps = Gauge(f"{PREFIX}_target_steps", "Optimizer steps planned.", registry=r)
        self.epoch = Gauge(f"{PREFIX}_epoch", "Current epoch (fractional).", registry=r)
        self.train_loss = Gauge(f"{PREFIX}_train_loss", "Training loss of the last step.", registry=r)
        self.eval_loss = Gauge(f"{PREFIX}_eval_loss", "Validation loss of the last evaluation.", registry=r)
        self.eval_accuracy = Gauge(f"{PREFIX}_eval_accuracy", "Validation accuracy (classification).", registry=r)
        self.eval_perplexity = Gauge(f"{PREFIX}_eval_perplexity", "Validation perplexity (causal-lm).", registry=r)
        self.samples_per_second = Gauge(f"{PREFIX}_samples_per_second", "Training throughput.", registry=r)
        self.tokens_per_second = Gauge(f"{PREFIX}_tokens_per_second", "Training tokens per second.", registry=r)
        self.step_duration = Histogram(
            f"{PREFIX}_step_duration_seconds", "Wall time of one optimizer step.", buckets=STEP_BUCKETS, registry=r
        )
        self.trainable = Gauge(f"{PREFIX}_trainable_parameters", "Parameters being trained.", registry=r)
        self.parameters = Gauge(f"{PREFIX}_parameters", "Parameters in the model.", registry=r)
        self.last_checkpoint = Gauge(
            f"{PREFIX}_last_checkpoint_timestamp_seconds", "Unix time of the last complete checkpoint.", registry=r
        )
        self.gpu_util: Gauge | None = None
        self.gpu_mem: Gauge | None = None
        if with_gpu:
            self.gpu_util = Gauge(f"{PREFIX}_gpu_utilization_ratio", "GPU busy ratio.", ["gpu"], registry=r)
            self.gpu_mem = Gauge(f"{PREFIX}_gpu_memory_used_bytes", "GPU memory in use.", ["gpu"], registry=r)

    def exposed(self) -> _WithoutCreated:
        """What ``/metrics`` serves: the registry minus ``*_created`` series (not in the reference).

        prometheus-client can only drop them process-wide; a view keeps that choice local.
        """
        return _WithoutCreated(self.registry)


class _WithoutCreated:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def gpu_present() -> bool:
    """GPU metrics exist only where there is a GPU (absent, not zero, on CPU)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


class Telemetry:
    """The live ProgressReport and metrics of this rank (only rank 0 serves them)."""

    def __init__(self, report: ProgressReport, with_gpu: bool | None = None) -> None:
        self._lock = threading.Lock()
        self.report = report
        self.metrics = Metrics(gpu_present() if with_gpu is None else with_gpu)
        self._server: ThreadingHTTPServer | None = None
        self._started = time.monotonic()
        self.port: int | None = None

    def update(self, **fields: Any) -> None:
        """Set report fields (cheap; safe to call every step)."""
        with self._lock:
            self.report = self.report.model_copy(update=fields)
            self.report.wall_seconds = time.monotonic() - self._started

    def snapshot(self) -> ProgressReport:
        """A consistent copy of the report."""
        with self._lock:
            out = self.report.model_copy(deep=True)
        out.wall_seconds = time.monotonic() - self._started
        return out

    def sample_gpus(self) -> None:
        """Refresh GPU utilisation and memory (NVML when available, else torch's allocator)."""
        m = self.metrics
        if m.gpu_util is None or m.gpu_mem is None:
            return
        import torch

        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                m.gpu_util.labels(gpu=str(i)).set(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                m.gpu_mem.labels(gpu=str(i)).set(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:
            for i in range(torch.cuda.device_count()):
                m.gpu_mem.labels(gpu=str(i)).set(torch.cuda.memory_allocated(i))

    def serve(self, port: int) -> int | None:
        """Start the HTTP server in a daemon thread; a busy port is logged, not fatal."""
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/progress":
                    body = telemetry.snapshot().model_dump_json().encode()
                    ctype = "application/json"
                elif path == "/metrics":
                    telemetry.sample_gpus()
                    body = generate_latest(telemetry.metrics.exposed())
                    ctype = CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    body = json.dumps({"ok": True, "state": telemetry.snapshot().state}).encode()
                    ctype = "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        except OSError as exc:
            log.warning("progress server not started on port %s: %s", port, exc)
            return None
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, name="kadapt-progress", daemon=True)
        thread.start()
        self.port = int(self._server.server_address[1])
        return self.port

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def progress_port(configured: int, env: dict[str, str] | None = None) -> int:
    """``KADAPT_PROGRESS_PORT`` wins over the config's port."""
    env = dict(os.environ) if env is None else env
    value = env.get(PORT_ENV)
    return int(value) if value else configured
