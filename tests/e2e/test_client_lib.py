"""m4v_client (sync and async) against a live API and worker: submit, wait with progress, events resumed
after an event id, download, list, cancel, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from m4v_client import APIError, AsyncClient, Client, SSEEvent
from tests.e2e.live_stack import FAST_JOB, LiveStack


def frames_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_submit_wait_download_list_and_resume_events(live: LiveStack, tmp_path: Path) -> None:
    with Client(live.url, api_key=live.alice) as m4v:
        job = m4v.submit("a red circle moving right", seed=11, **FAST_JOB)
        seen: list[SSEEvent] = []
        final = m4v.wait(job["id"], progress=seen.append)
        assert final["status"] == "succeeded" and final["spec"]["seed"] == 11
        assert final["id"] == job["id"] and m4v.get(job["id"])["status"] == "succeeded"
        kinds = [e.event for e in seen]
        assert kinds[-1] == "done" and "progress" in kinds

        assert frames_of(m4v.download(job["id"], tmp_path / "out.mp4")) == 9
        assert (m4v.download(job["id"], tmp_path / "t.jpg", variant="thumbnail")).read_bytes()[
            :3
        ] == b"\xff\xd8\xff"

        # Resume: the events after a given id are the tail of the full stream.
        full = list(m4v.events(job["id"]))
        after = list(m4v.events(job["id"], last_event_id=full[1].id))
        assert [(e.id, e.event) for e in after] == [(e.id, e.event) for e in full[2:]]

        assert job["id"] in [j["id"] for j in m4v.iter_jobs(page_size=1)]
        assert job["id"] in [j["id"] for j in m4v.list(status="succeeded", limit=100)["data"]]
        assert job["id"] not in [j["id"] for j in m4v.list(status="queued", limit=100)["data"]]

        with pytest.raises(APIError) as info:
            m4v.get("0" * 32)
        assert info.value.status_code == 404 and info.value.type == "not_found"
    with Client(live.url, api_key=live.bob) as other, pytest.raises(APIError) as info:
        other.get(job["id"])
    assert info.value.status_code == 404


def test_cancel_stops_a_long_job(live: LiveStack) -> None:
    with Client(live.url, api_key=live.alice) as m4v:
        job = m4v.submit(
            "a long one", num_frames=9, first_frame_steps=[100, 100, 100], later_frame_steps=[100, 100, 100]
        )
        m4v.cancel(job["id"])  # queued: canceled now; running: stops at its next step
        assert m4v.wait(job["id"])["status"] == "canceled"


def test_async_client(live: LiveStack, tmp_path: Path) -> None:
    async def run() -> tuple[dict, list[str], Path, dict]:  # type: ignore[type-arg]
        async with AsyncClient(live.url, api_key=live.bob) as m4v:
            info = await m4v.info()
            job = await m4v.submit("a blue square", **FAST_JOB)
            seen: list[str] = []

            async def note(event: SSEEvent) -> None:
                seen.append(event.event)

            final = await m4v.wait(job["id"], progress=note)
            out = await m4v.download(job["id"], tmp_path / "a.mp4")
            page = await m4v.list(limit=1)
            return final, seen, out, {"info": info, "page": page}

    final, seen, out, extra = asyncio.run(run())
    assert final["status"] == "succeeded" and seen[-1] == "done"
    assert frames_of(out) == 9
    assert extra["page"]["data"][0]["id"] == final["id"]
    assert extra["info"]["presets"][0]["name"] == "tiny"
