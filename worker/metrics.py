"""Prometheus metrics of one worker process, served on their own port. No torch, nothing at import time.

Each WorkerMetrics owns a CollectorRegistry, so tests (and several workers in one process) never collide on
prometheus_client's global registry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

log = logging.getLogger(__name__)

PHASES = ("queue", "text", "sampling", "decode", "encode", "upload", "total")
# Seconds: a tiny CPU job takes ~1 s, a 768p 10 s video tens of minutes.
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# |ETA - actual| / actual (worker/eta_error.py): 0.1 = 10% off
ETA_ERROR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.ready = Gauge("m4v_worker_ready", "1 once the pipeline is loaded and jobs are taken", registry=r)
        self.busy = Gauge("m4v_worker_busy", "1 while a job runs", registry=r)
        self.job_phase_seconds = Histogram(
            "m4v_job_phase_seconds",
            "time per job phase",
            ["phase", "preset", "resolution"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.sampler_step_seconds = Histogram(
            "m4v_sampler_step_seconds",
            "wall time of one sampler step",
            ["preset", "stage"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.model_flops = Counter(
            "m4v_model_flops", "FLOPs spent by the model, by component", ["preset", "component"], registry=r
        )
        self.achieved_tflops = Gauge(
            "m4v_achieved_tflops",
            "model TFLOP/s of the last job (sampling + decode time)",
            ["preset"],
            registry=r,
        )
        self.gpu_memory_peak = Gauge(
            "m4v_gpu_memory_peak_bytes", "CUDA peak memory of the last job", registry=r
        )
        self.jobs = Counter(
            "m4v_jobs", "jobs finished by this worker, by final status", ["status"], registry=r
        )
        self.webhook_deliveries = Counter(
            "m4v_webhook_deliveries", "webhook delivery attempts by outcome", ["outcome"], registry=r
        )
        self.eta_relative_error = Histogram(
            "m4v_eta_relative_error",
            "median |ETA - actual time left| / actual over a succeeded job's progress reports",
            ["preset"],
            buckets=ETA_ERROR_BUCKETS,
            registry=r,
        )
        self.heartbeat_timestamp = Gauge(
            "m4v_worker_heartbeat_timestamp_seconds",
            "unix time of the last heartbeat this worker wrote to Redis (NaN before the first)",
            registry=r,
        )

    def watch_heartbeat(self, last_beat_s: Callable[[], float | None]) -> None:
        self.heartbeat_timestamp.set_function(lambda: v if (v := last_beat_s()) is not None else math.nan)

    def observe_phases(self, preset: str, resolution: str, phases: dict[str, float | None]) -> None:
        for phase, seconds in phases.items():
            if seconds is not None:
                self.job_phase_seconds.labels(phase=phase, preset=preset, resolution=resolution).observe(
                    seconds
                )

    def add_flops(self, preset: str, flops: dict[str, float]) -> None:
        for component, value in flops.items():
            if value > 0:
                self.model_flops.labels(preset=preset, component=component).inc(value)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of one sample (tests and debugging)."""
        return self.registry.get_sample_value(name, labels or {})

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Start the /metrics HTTP server in a daemon thread on addr (loopback by default; the chart passes
        the pod IP, never all interfaces); returns (server, thread)."""
        started = start_http_server(port, addr=addr, registry=self.registry)
        log.info("worker metrics listening", extra={"port": port, "addr": addr})
        return started
