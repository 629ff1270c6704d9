"""Body-size and prompt-length limits: 413 before parsing (also for chunked bodies), 422 for long prompts."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from m4v_core import Settings
from service.app import create_app
from tests.service.conftest import assert_error_shape


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    """A JSON body sent without Content-Length (Transfer-Encoding: chunked)."""
    body = b'{"prompt": "' + b"a" * (total - 14) + b'"}'
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_body_over_the_limit_is_413(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": 8192}))) as c:
        response = c.post("/generate", content=chunks(50_000), headers={"Content-Type": "application/json"})
    error = assert_error_shape(response, 413, "payload_too_large")
    assert error["details"] == {"limit": 8192}


def test_a_chunked_body_under_the_limit_is_processed(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        response = c.post("/generate", content=chunks(100), headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text


def test_declared_length_over_the_configured_limit_is_413(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": 2048}))) as c:
        response = c.post("/generate", json={"prompt": "a" * 3000})
    assert_error_shape(response, 413, "payload_too_large")


def test_prompts_over_the_configured_length_are_422_naming_the_field(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_prompt_chars": 10}))) as c:
        ok = c.post("/generate", json={"prompt": "a" * 10})
        long_prompt = c.post("/generate", json={"prompt": "a" * 11})
        long_negative = c.post("/generate", json={"prompt": "a", "negative_prompt": "b" * 11})
    assert ok.status_code == 202
    error = assert_error_shape(long_prompt, 422, "validation_error")
    assert error["details"] == [{"field": "prompt", "message": "11 characters exceeds the limit of 10"}]
    assert assert_error_shape(long_negative, 422)["details"][0]["field"] == "negative_prompt"


def test_the_schema_caps_prompts_at_2000_characters_whatever_the_setting(client: TestClient) -> None:
    assert_error_shape(client.post("/generate", json={"prompt": "a" * 2001}), 422, "validation_error")
