"""GET /jobs/{id}/events: SSE replayed from the Redis stream, followed live, ended by "done"."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m4v_core import JobStore
from m4v_core.store import utcnow
from tests.service.conftest import assert_error_shape, submit


@dataclass
class Sse:
    id: str | None
    event: str
    data: Any


def read_sse(
    client: TestClient, url: str, headers: dict[str, str] | None = None, limit: int = 100
) -> list[Sse]:
    """Reads the stream to its end (the server closes it after "done"), at most `limit` events."""
    events: list[Sse] = []
    fields: dict[str, str] = {}
    with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                events.append(
                    Sse(fields.get("id"), fields.get("event", "message"), json.loads(fields["data"]))
                )
            fields = {}
            if len(events) >= limit:
                break
    return events


def progress(store: JobStore, job_id: str, steps: range) -> None:
    for step in steps:
        store.append_event(job_id, "progress", {"step": step, "percent": step * 10.0})


def finish(store: JobStore, job_id: str) -> None:
    store.transition(job_id, {"queued", "running"}, "succeeded", finished_at=utcnow())
    store.append_event(job_id, "done", {"id": job_id, "status": "succeeded"})


def test_progress_events_arrive_in_order_then_done(client: TestClient, store: JobStore) -> None:
    job_id = submit(client)["id"]
    progress(store, job_id, range(1, 6))
    finish(store, job_id)
    events = read_sse(client, f"/jobs/{job_id}/events")
    assert [e.event for e in events] == ["status"] + ["progress"] * 5 + ["done"]
    assert [e.data["step"] for e in events if e.event == "progress"] == [1, 2, 3, 4, 5]
    assert events[-1].data["status"] == "succeeded"
    ids = [e.id for e in events]
    assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_events_written_while_listening_are_streamed_live(
    client: TestClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each blocking read is woken by the new entries, not by its timeout: the reads block up to 20 s here
    (under the 30 s socket timeout), and none of them comes back empty. No wall-clock bound."""
    from service import event_stream

    reads: list[tuple[int | None, int]] = []  # (block_ms, events returned) per XREAD
    real_read = event_stream._read

    async def counting_read(state: Any, job_id: str, after: str, block_ms: int | None) -> list[Any]:
        got = await real_read(state, job_id, after, None if block_ms is None else 20_000)
        reads.append((block_ms, len(got)))
        return got

    monkeypatch.setattr(event_stream, "_read", counting_read)
    job_id = submit(client)["id"]

    def worker() -> None:
        time.sleep(0.3)
        store.transition(job_id, {"queued"}, "running")
        progress(store, job_id, range(3))
        time.sleep(0.2)
        finish(store, job_id)

    thread = threading.Thread(target=worker)
    thread.start()
    events = read_sse(client, f"/jobs/{job_id}/events")
    thread.join()
    assert [e.event for e in events] == ["status", "progress", "progress", "progress", "done"]
    blocking = [n for block, n in reads if block is not None]
    assert blocking and all(n > 0 for n in blocking), reads


def test_reconnect_with_last_event_id_replays_the_rest(client: TestClient, store: JobStore) -> None:
    job_id = submit(client)["id"]
    progress(store, job_id, range(1, 5))
    finish(store, job_id)
    first = read_sse(client, f"/jobs/{job_id}/events", limit=3)
    assert [e.event for e in first] == ["status", "progress", "progress"]
    rest = read_sse(client, f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(first[-1].id)})
    assert [e.event for e in rest] == ["progress", "progress", "done"]
    assert [e.data["step"] for e in rest[:2]] == [3, 4]
    by_query = read_sse(client, f"/jobs/{job_id}/events?last_event_id={first[-1].id}")
    assert [e.id for e in by_query] == [e.id for e in rest]


def test_finished_job_with_expired_stream_gets_a_final_done_with_the_job(
    client: TestClient, store: JobStore
) -> None:
    job_id = submit(client)["id"]
    store.transition(job_id, {"queued"}, "failed", finished_at=utcnow())
    store.r.delete(store.keys.events(job_id))
    events = read_sse(client, f"/jobs/{job_id}/events")
    assert [e.event for e in events] == ["done"]
    assert events[0].data["id"] == job_id and events[0].data["status"] == "failed"


def test_canceling_a_queued_job_ends_its_event_stream(client: TestClient) -> None:
    job_id = submit(client)["id"]
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    events = read_sse(client, f"/jobs/{job_id}/events")
    assert [e.event for e in events] == ["status", "status", "done"]
    assert events[-1].data["status"] == "canceled"


def test_malformed_last_event_id_is_422(client: TestClient) -> None:
    job_id = submit(client)["id"]
    response = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert "Last-Event-ID" in assert_error_shape(response, 422, "validation_error")["message"]
