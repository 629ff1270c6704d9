"""Schemathesis against /openapi.json over the ASGI app with real Redis: >= 1000 generated cases (valid and
invalid data for every operation), no response >= 500, within a bounded time."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from m4v_core import Settings
from service.app import create_app
from service.auth import key_entry, new_api_key

log = logging.getLogger(__name__)
API_KEY = new_api_key()
EXAMPLES = {"POST /generate": 300}  # the richest body gets the most cases
DEFAULT_EXAMPLES = 60  # per operation and generation mode
MIN_CASES = 1000
TIME_BUDGET_S = 240.0


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    """Keys mode with one key, no rate limit; the lifespan runs for the whole test."""
    app = create_app(
        settings.model_copy(
            update={
                "auth_mode": "keys",
                "api_keys": [SecretStr(key_entry("fuzz", API_KEY))],
                "rate_limit_requests": 0,
                "max_queue_depth": 100_000,
                "log_level": "WARNING",
            }
        )
    )
    with TestClient(app):
        yield app


def run_operation(operation: schemathesis.APIOperation, mode: GenerationMode, examples: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {API_KEY}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Case) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"

    try:
        fuzz()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # negative data is impossible for an operation without inputs (e.g. GET /healthz)
    return statuses


@pytest.mark.slow
def test_generated_requests_never_get_a_5xx(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    started = time.monotonic()
    per_operation: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        examples = EXAMPLES.get(label, DEFAULT_EXAMPLES)
        statuses: Counter[int] = Counter()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            statuses += run_operation(operation, mode, examples)
        per_operation[label] = statuses
    elapsed = time.monotonic() - started
    total = sum(sum(c.values()) for c in per_operation.values())
    summary = {label: dict(c) for label, c in per_operation.items()}
    log.info("fuzz: %d cases in %.1fs: %s", total, elapsed, summary)
    assert total >= MIN_CASES, summary
    assert elapsed < TIME_BUDGET_S, f"{total} cases took {elapsed:.0f}s"
    assert not [s for c in per_operation.values() for s in c if s >= 500], summary
    assert per_operation["POST /generate"][202] > 0, summary  # valid bodies were generated and accepted
    assert per_operation["POST /generate"][422] > 0, summary  # and invalid ones rejected
