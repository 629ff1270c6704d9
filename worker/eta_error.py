"""How far off a job's ETAs were: every progress report's eta_s against the time the job really took from
there. Feeds m4v_eta_relative_error (one observation per succeeded job: the median over its reports)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from model.pipeline_types import StepProgress

MIN_LEFT_S = 1e-3  # reports this close to the end say nothing about the estimate


@dataclass
class EtaErrors:
    """Wraps the per-step ETA (worker/eta.py JobEta); passes its answer through and remembers it."""

    eta: Callable[[StepProgress], float | None]
    clock: Callable[[], float] = time.perf_counter
    reports: list[tuple[float, float]] = field(default_factory=list)  # (clock at the report, eta_s)

    def __call__(self, p: StepProgress) -> float | None:
        eta_s = self.eta(p)
        if eta_s is not None:
            self.reports.append((self.clock(), eta_s))
        return eta_s

    def median_relative_error(self, finished: float | None = None) -> float | None:
        end = self.clock() if finished is None else finished
        errors = [abs(eta - (end - at)) / (end - at) for at, eta in self.reports if end - at > MIN_LEFT_S]
        return statistics.median(errors) if errors else None

    def observe(self, histogram: Histogram, preset: str) -> None:
        error = self.median_relative_error()
        if error is not None:
            histogram.labels(preset=preset).observe(error)
