"""Streaming previews and partial results, end to end in-process: real Redis, rq SimpleWorker(burst=True),
the tiny model, SeaweedFS. Previews are fetched through their presigned URLs, as a player would."""

from __future__ import annotations

import io
import logging
import threading
from typing import Any

import av
import httpx
import numpy as np
import pytest

from m4v_core import JobStore, Settings
from tests.worker.jobs_helpers import ONE_STEP_PER_STAGE, events, make_job, queue, submit, work
from worker.preview import encode_ts_segment, hls_playlist
from worker.storage import Storage


def decode_hls(playlist_url: str) -> list[av.VideoFrame]:
    """Fetch the playlist, then every segment it lists, and decode them as one MPEG-TS stream (what an
    HLS player does; an EVENT playlist is "live" to ffmpeg's own hls demuxer, which would wait for more)."""
    text = httpx.get(playlist_url, timeout=10).raise_for_status().text
    assert text.startswith("#EXTM3U")
    urls = [line for line in text.splitlines() if line and not line.startswith("#")]
    data = b"".join(httpx.get(u, timeout=10).raise_for_status().content for u in urls)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return list(container.decode(video=0))


def test_segments_have_continuous_timestamps() -> None:
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    data = encode_ts_segment(frames, fps=8, first_frame=5)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 4
    times = [float(f.time) for f in decoded]
    assert times[0] == pytest.approx(5 / 8, abs=1e-3) or times[1] - times[0] == pytest.approx(1 / 8)
    assert np.diff(times) == pytest.approx([1 / 8] * 3)


def test_playlist_is_event_until_the_last_segment_then_ends() -> None:
    from worker.preview import Segment

    segs = [Segment("a.ts", 1, 0.125), Segment("b.ts", 4, 0.5)]
    live = hls_playlist(["u1", "u2"], segs, ended=False)
    done = hls_playlist(["u1", "u2"], segs, ended=True)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in live and "#EXT-X-ENDLIST" not in live
    assert done.rstrip().endswith("#EXT-X-ENDLIST") and "\nu2\n" in done


def test_preview_events_arrive_before_the_job_ends_and_decode_to_the_frames_done(
    settings: Settings,
    store: JobStore,
    tiny_pipeline: Any,
) -> None:
    job = make_job(num_frames=9, **ONE_STEP_PER_STAGE)  # 3 units: 1 + 4 + 4 frames
    submit(store, queue(store), job)
    seen: list[tuple[dict[str, Any], list[av.VideoFrame], str]] = []

    def watch_previews() -> None:
        """While the worker runs: decode each preview as soon as its event arrives."""
        last = "0-0"
        while True:
            for eid, typ, data in store.read_events(job.id, after=last, block_ms=200):
                last = eid
                if typ == "preview":
                    seen.append((data, decode_hls(data["url"]), store.get(job.id).status))
                if typ == "done":
                    return

    watcher = threading.Thread(target=watch_previews, daemon=True)
    watcher.start()
    work(settings, tiny_pipeline)
    watcher.join(30)

    final = store.get(job.id)
    assert final.status == "succeeded", final.error
    types = [t for t, _ in events(store, job.id)]
    assert types.count("preview") == 3 and types.index("preview") < types.index("done")
    assert [d["frames_done"] for d, _, _ in seen] == [1, 5, 9]
    assert [len(frames) for _, frames, _ in seen] == [1, 5, 9]  # each URL: exactly the frames done so far
    assert seen[0][2] == "running"  # the first preview was playable while the job was still running
    assert [d["ended"] for d, _, _ in seen] == [False, False, True]
    assert all(d["delay_s"] >= 0 and d["format"] == "hls" for d, _, _ in seen)
    logging.getLogger(__name__).warning(
        "unit finished -> preview event: %s s", [d["delay_s"] for d, _, _ in seen]
    )

    # the streamed frames are the final video's frames (up to lossy coding)
    final_mp4 = Storage.from_settings(settings).download(final.result.video_key)  # type: ignore[union-attr]
    with av.open(io.BytesIO(final_mp4)) as container:
        want = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    got = np.stack([f.to_ndarray(format="rgb24") for f in seen[-1][1]])
    assert got.shape == want.shape == (9, 128, 128, 3)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 8


def test_previews_off_publishes_no_preview_events(
    settings: Settings,
    store: JobStore,
    tiny_pipeline: Any,
) -> None:
    job = make_job(num_frames=1, **ONE_STEP_PER_STAGE)
    submit(store, queue(store), job)
    work(settings.model_copy(update={"previews": False}), tiny_pipeline)
    assert store.get(job.id).status == "succeeded"
    assert "preview" not in [t for t, _ in events(store, job.id)]


def _stop_after_first_preview(store: JobStore, job_id: str, action: Any) -> threading.Thread:
    def run() -> None:
        last = "0-0"
        while True:
            for eid, typ, _ in store.read_events(job_id, after=last, block_ms=200):
                last = eid
                if typ == "preview":
                    action()
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _assert_playable_partial(settings: Settings, store: JobStore, job_id: str, status: str) -> int:
    final = store.get(job_id)
    assert final.status == status, final.error
    result = final.result
    assert result is not None and result.partial
    assert 1 <= result.frames_done < final.spec.num_frames and result.frames == result.frames_done
    data = Storage.from_settings(settings).download(result.video_key)
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name.startswith("mov")
        frames = list(container.decode(video=0))
    assert len(frames) == result.frames_done
    done = [d for t, d in events(store, job_id) if t == "done"][-1]
    assert done["result"]["partial"] is True and done["result"]["video_url"].startswith("http")
    assert len(decode_url(done["result"]["video_url"])) == result.frames_done
    return result.frames_done


def decode_url(url: str) -> list[av.VideoFrame]:
    data = httpx.get(url, timeout=10).raise_for_status().content
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def test_cancel_mid_job_keeps_a_playable_partial_mp4_of_frames_done(
    settings: Settings,
    store: JobStore,
    tiny_pipeline: Any,
) -> None:
    job = make_job(num_frames=9, **ONE_STEP_PER_STAGE)  # 3 units, 9 steps
    submit(store, queue(store), job)
    watcher = _stop_after_first_preview(store, job.id, lambda: store.request_cancel(job.id))
    work(settings, tiny_pipeline)
    watcher.join(5)
    frames_done = _assert_playable_partial(settings, store, job.id, "canceled")
    assert frames_done in (1, 5)  # whole units only


def test_timeout_mid_job_keeps_a_playable_partial_mp4_of_frames_done(
    settings: Settings,
    store: JobStore,
    tiny_pipeline: Any,
) -> None:
    job = make_job(num_frames=9, timeout_s=3600, **ONE_STEP_PER_STAGE)
    submit(store, queue(store), job)

    def expire_now() -> None:  # the deadline passes right after the first unit is out
        store.update(job.id, lambda j: setattr(j, "deadline", j.created_at) or True)  # type: ignore[func-returns-value]

    watcher = _stop_after_first_preview(store, job.id, expire_now)
    work(settings, tiny_pipeline)
    watcher.join(5)
    _assert_playable_partial(settings, store, job.id, "timed_out")
    assert store.get(job.id).error.type == "timeout"  # type: ignore[union-attr]
