"""m4v_eta_relative_error: each report's ETA against the time the job really took from that report."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from worker.eta_error import EtaErrors
from worker.metrics import WorkerMetrics


def test_median_relative_error_of_the_reported_etas_is_observed() -> None:
    now = [0.0]
    answers = iter([None, 9.0, 4.0, 1.5])  # no rate yet, then ETAs at t=1, 2, 3; the job ends at t=10

    def eta(_: Any) -> float | None:
        now[0] += 1.0
        return next(answers)

    errors = EtaErrors(eta, clock=lambda: now[0])
    step = SimpleNamespace()
    assert [errors(step) for _ in range(4)] == [None, 9.0, 4.0, 1.5]  # passed through unchanged
    now[0] = 10.0
    # left at t=2: 8 s (ETA 9: 1/8 off), t=3: 7 s (ETA 4: 3/7 off), t=4: 6 s (ETA 1.5: 4.5/6 off)
    assert errors.median_relative_error() == pytest.approx(3 / 7)
    metrics = WorkerMetrics()
    errors.observe(metrics.eta_relative_error, "tiny")
    assert metrics.sample("m4v_eta_relative_error_count", {"preset": "tiny"}) == 1
    assert metrics.sample("m4v_eta_relative_error_sum", {"preset": "tiny"}) == pytest.approx(3 / 7)


def test_a_job_without_etas_observes_nothing() -> None:
    errors = EtaErrors(lambda _: None)
    errors(SimpleNamespace())
    metrics = WorkerMetrics()
    errors.observe(metrics.eta_relative_error, "tiny")
    assert metrics.sample("m4v_eta_relative_error_count", {"preset": "tiny"}) is None
