"""The `openai` SDK itself, unmodified, against a real server and worker: create -> poll -> download, list
per key with pagination, delete; and a job made through either surface is visible through both."""

from __future__ import annotations

import io
import time
import warnings

import av
import httpx
import openai
import pytest

from tests.e2e.live_stack import FAST_JOB, V1_FAST_JOB, LiveStack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its Sora API deprecated


def sdk(live: LiveStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def wait_finished(client: openai.OpenAI, video_id: str, timeout_s: float = 300) -> openai.types.Video:
    deadline = time.monotonic() + timeout_s
    while True:
        video = client.videos.retrieve(video_id)
        if video.status in ("completed", "failed") or time.monotonic() > deadline:
            return video
        time.sleep(0.5)


def test_create_poll_download_delete(live: LiveStack) -> None:
    client = sdk(live, live.alice)
    steps = {**V1_FAST_JOB, "seed": 4}
    video = client.videos.create(
        prompt="a red circle moving right", model="tiny", size="128x128", extra_body=steps
    )
    assert video.object == "video" and video.status in ("queued", "in_progress") and video.model == "tiny"
    done = wait_finished(client, video.id)
    assert done.status == "completed" and done.progress == 100, done
    assert done.completed_at is not None and done.size == "128x128"

    content = client.videos.download_content(video.id)
    with av.open(io.BytesIO(content.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (128, 128, 3)
    thumbnail = client.videos.download_content(video.id, variant="thumbnail").content
    assert thumbnail[:3] == b"\xff\xd8\xff"  # a JPEG

    # The same job through the native API.
    native = httpx.get(
        f"{live.url}/jobs/{video.id}", headers={"Authorization": f"Bearer {live.alice}"}
    ).json()
    assert native["status"] == "succeeded" and native["spec"]["seed"] == 4

    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(openai.NotFoundError) as info:
        client.videos.retrieve(video.id)
    assert info.value.body["code"] == "not_found"  # type: ignore[index]


def test_list_pages_through_the_callers_videos_only(live: LiveStack) -> None:
    """carol is used by this test alone: her list is exactly what it made."""
    carol = sdk(live, live.carol)
    made = [
        carol.videos.create(
            prompt=f"carol {i}", extra_body={**V1_FAST_JOB, "extra_params": {"priority": "low"}}
        ).id
        for i in range(3)
    ]
    native = httpx.post(
        f"{live.url}/generate",
        json={"prompt": "carol native", **FAST_JOB},
        headers={"Authorization": f"Bearer {live.carol}"},
    ).json()["id"]
    listed = [v.id for v in carol.videos.list(limit=2)]  # the SDK follows has_more/last_id through every page
    assert listed == [native, *made[::-1]]
    first = carol.videos.list(limit=2, order="asc")
    assert [v.id for v in first.data] == made[:2] and first.has_more
    assert all(v.id not in listed for v in sdk(live, live.bob).videos.list(limit=100))
    for video_id in [*made, native]:
        carol.videos.delete(video_id)
    assert carol.videos.list().data == []


def test_errors_reach_the_sdk_as_its_exceptions(live: LiveStack) -> None:
    client = sdk(live, live.alice)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.videos.create(prompt="x", size="1280x720")
    assert info.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        sdk(live, "m4v_not-a-key").videos.list()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        long = client.videos.create(prompt="x", extra_body={"num_frames": 9, "num_inference_steps": 300})
    with pytest.raises(openai.ConflictError):
        client.videos.download_content(long.id)  # 300 steps a frame: far from done
    client.videos.delete(long.id)  # queued or running: canceled
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(long.id)
