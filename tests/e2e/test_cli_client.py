"""`m4v generate` client pieces: SSE parsing, Last-Event-ID resume, -i key=value fields, progress labels."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import typer

from m4v_cli.inputs import request_fields
from m4v_cli.progress import describe
from m4v_client.sse import follow, parse_sse


def test_parse_sse_joins_multiline_data_and_skips_comments() -> None:
    lines = [": ping", "event: progress", "id: 1-0", 'data: {"a":', "data: 1}", "", "data: x", ""]
    events = list(parse_sse(lines))
    assert [(e.event, e.id, e.data) for e in events] == [
        ("progress", "1-0", '{"a":\n1}'),
        ("message", "1-0", "x"),
    ]
    assert events[0].json() == {"a": 1}


class _DroppingSSE(BaseHTTPRequestHandler):
    """First connection: one event then a hang-up. Reconnects: events after Last-Event-ID, then done."""

    seen_last_ids: list[str | None] = []
    events = [
        ("1-0", "status", '{"status": "running"}'),
        ("2-0", "progress", '{"percent": 50}'),
        ("3-0", "done", '{"status": "succeeded"}'),
    ]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        last = self.headers.get("Last-Event-ID")
        type(self).seen_last_ids.append(last)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        start = 0 if last is None else [e[0] for e in self.events].index(last) + 1
        batch = self.events[start : start + 1] if last is None else self.events[start:]
        for eid, typ, data in batch:
            self.wfile.write(f"id: {eid}\nevent: {typ}\ndata: {data}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sse_server() -> Iterator[str]:
    _DroppingSSE.seen_last_ids = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DroppingSSE)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_follow_resumes_after_a_dropped_stream_with_last_event_id(sse_server: str) -> None:
    seen = []
    with httpx.Client(base_url=sse_server) as client:
        for ev in follow(client, "/events", backoff_s=0.01):
            seen.append(ev.event)
            if ev.event == "done":
                break
    assert seen == ["status", "progress", "done"]
    assert _DroppingSSE.seen_last_ids == [None, "1-0"]


def test_inputs_take_json_values_strings_and_size_and_override_flags() -> None:
    fields = request_fields(
        {"seed": 1, "size": "128x128", "fps": None},
        ["seed=7", "first_frame_steps=[1,1,1]", "priority=high", "negative-prompt=blurry, dark"],
    )
    assert fields == {
        "seed": 7,
        "width": 128,
        "height": 128,
        "first_frame_steps": [1, 1, 1],
        "priority": "high",
        "negative_prompt": "blurry, dark",
    }
    with pytest.raises(typer.BadParameter):
        request_fields({}, ["seed"])
    with pytest.raises(typer.BadParameter):
        request_fields({"size": "big"}, [])


def test_progress_label_shows_stage_step_and_percent() -> None:
    label, percent = describe(
        {
            "event": "progress",
            "status": "running",
            "progress": {"stage": 1, "step": 2, "steps_total": 4, "percent": 42.0},
        }
    )
    assert "stage 2 step 2/4" in label
    assert percent == 42.0
    assert describe({"event": "status", "status": "queued", "queue_position": 3, "eta_s": 12.2}) == (
        "queued (position 3) · ETA 12s",
        None,
    )
