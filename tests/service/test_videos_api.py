"""/v1/videos on the API alone (no worker): field mapping, both body encodings, one job under both surfaces,
the OpenAI error shape, delete. The OpenAI SDK round trip with a worker is tests/e2e/test_openai_sdk.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobResult, JobStore, Settings
from m4v_core.store import utcnow
from service.app import create_app
from tests.conftest import s3_client
from tests.service.keyed import ALICE, BOB, bearer, with_two_keys


def openai_error(response: object, status: int, param: str | None = None, code: str | None = None) -> dict:  # type: ignore[type-arg]
    """{"error": {"message", "type", "param", "code"}}."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


def test_json_create_maps_the_fields_and_both_surfaces_show_the_job(client: TestClient) -> None:
    body = {
        "prompt": "a red circle",
        "model": "tiny",
        "size": "128x128",
        "seconds": "2",
        "seed": 5,
        "num_inference_steps": 6,
        "extra_params": {"priority": "high", "video_guidance_scale": 3.5},
    }
    video = client.post("/v1/videos", json=body)
    assert video.status_code == 200, video.text
    out = video.json()
    assert out["object"] == "video" and out["status"] == "queued" and out["progress"] == 0
    assert out["model"] == "tiny" and out["size"] == "128x128" and out["prompt"] == "a red circle"
    assert out["seconds"] == "2.125"  # 2 s at the tiny preset's 8 fps, rounded to a valid 17 frames
    job = client.get(f"/jobs/{out['id']}").json()
    spec = job["spec"]
    assert (spec["width"], spec["height"], spec["num_frames"], spec["seed"]) == (128, 128, 17, 5)
    assert spec["first_frame_steps"] == [2, 2, 2] and spec["later_frame_steps"] == [2, 2, 2]
    assert job["priority"] == "high" and spec["video_guidance_scale"] == 3.5
    assert client.get(f"/v1/videos/{out['id']}").json() == out


def test_multipart_create_with_nested_extra_params(client: TestClient) -> None:
    form = {
        "prompt": "a blue square",
        "seconds": "1",
        "extra_params[seed]": "9",
        "extra_params[priority]": "low",
    }
    parts = {name: (None, value) for name, value in form.items()}  # multipart/form-data, as the SDK sends
    video = client.post("/v1/videos", files=parts)
    assert video.status_code == 200, video.text
    job = client.get(f"/jobs/{video.json()['id']}").json()
    assert job["spec"]["seed"] == 9 and job["priority"] == "low" and job["spec"]["num_frames"] == 9


def test_a_native_job_is_a_video_and_finished_states_map(client: TestClient, store: JobStore) -> None:
    job = client.post("/generate", json={"prompt": "x"}).json()
    assert client.get(f"/v1/videos/{job['id']}").json()["status"] == "queued"
    store.transition(job["id"], {"queued"}, "canceled", finished_at=utcnow())
    video = client.get(f"/v1/videos/{job['id']}").json()
    assert video["status"] == "failed" and video["error"]["code"] == "canceled"
    assert video["completed_at"] is not None and video["expires_at"] > video["completed_at"]


def test_errors_use_the_openai_shape_and_name_the_param(client: TestClient) -> None:
    for body, param in (
        ({"prompt": "x", "size": "640x384"}, "size"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "model": "sora-2"}, "model"),
        ({"prompt": "x", "seconds": "soon"}, "seconds"),
        ({"prompt": "x", "num_frames": 10}, "num_frames"),
        ({"prompt": "x", "extra_params": {"nope": 1}}, "extra_params.nope"),
        ({"prompt": "x", "extra_params": {"priority": "urgent"}}, "extra_params.priority"),
        ({"prompt": ""}, "prompt"),
        ({"size": "128x128"}, "prompt"),
        ({"prompt": "x", "unknown": 1}, "unknown"),
    ):
        openai_error(client.post("/v1/videos", json=body), 422, param)
    openai_error(
        client.post("/v1/videos", content=b"{", headers={"content-type": "application/json"}), 422, "body"
    )
    big = client.post("/v1/videos", content=b"x" * 70_000, headers={"content-type": "application/json"})
    openai_error(big, 413, code="payload_too_large")
    openai_error(client.get(f"/v1/videos/{uuid.uuid4().hex}"), 404, code="not_found")
    job = client.post("/v1/videos", json={"prompt": "x"}).json()
    openai_error(client.get(f"/v1/videos/{job['id']}/content"), 409, "variant", "video_not_ready")
    openai_error(client.get(f"/v1/videos/{job['id']}/content", params={"variant": "gif"}), 422, "variant")


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(with_two_keys(settings))) as c:
        yield c


def test_list_is_per_key_and_pages_with_after(keyed: TestClient) -> None:
    mine = [
        keyed.post("/v1/videos", json={"prompt": f"a {i}"}, headers=bearer(ALICE)).json()["id"]
        for i in range(3)
    ]
    keyed.post("/generate", json={"prompt": "bob's"}, headers=bearer(BOB))
    first = keyed.get("/v1/videos", params={"limit": 2}, headers=bearer(ALICE)).json()
    assert first["object"] == "list" and [v["id"] for v in first["data"]] == mine[:0:-1]
    assert first["has_more"] and first["last_id"] == mine[1]
    rest = keyed.get(
        "/v1/videos", params={"limit": 2, "after": first["last_id"]}, headers=bearer(ALICE)
    ).json()
    assert [v["id"] for v in rest["data"]] == [mine[0]] and rest["has_more"] is False
    openai_error(keyed.get(f"/v1/videos/{mine[0]}", headers=bearer(BOB)), 404)
    openai_error(keyed.get("/v1/videos", params={"after": mine[0]}, headers=bearer(BOB)), 422, "after")
    openai_error(keyed.get("/v1/videos"), 401, code="unauthorized")
    openai_error(keyed.post("/v1/videos", json={"size": "big"}), 401, code="unauthorized")  # key before body


def test_delete_of_a_queued_video_cancels_it_and_forgets_it(client: TestClient, store: JobStore) -> None:
    job = client.post("/v1/videos", json={"prompt": "x"}).json()
    gone = client.delete(f"/v1/videos/{job['id']}")
    assert gone.status_code == 200 and gone.json() == {
        "id": job["id"],
        "object": "video.deleted",
        "deleted": True,
    }
    openai_error(client.get(f"/v1/videos/{job['id']}"), 404)
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    assert client.get("/v1/videos").json()["data"] == []
    assert not store.r.exists(store.keys.job(job["id"]), store.keys.events(job["id"]))


def test_delete_of_a_running_video_asks_it_to_stop_and_hides_it(client: TestClient, store: JobStore) -> None:
    job = client.post("/v1/videos", json={"prompt": "x"}).json()
    store.transition(job["id"], {"queued"}, "running", started_at=utcnow())
    assert client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    assert store.cancel_requested(job["id"])
    openai_error(client.get(f"/v1/videos/{job['id']}"), 404)
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    store.transition(job["id"], {"running"}, "canceled", finished_at=utcnow())  # the worker stops it
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    assert client.get("/jobs").json()["data"] == []


def test_content_streams_through_the_api_and_delete_removes_the_objects(
    settings: Settings, store: JobStore, s3_server: SeaweedS3, s3_bucket: str
) -> None:
    served = settings.model_copy(
        update={
            "s3_endpoint": s3_server.endpoint,
            "s3_bucket": s3_bucket,
            "s3_access_key": SecretStr(s3_server.access_key),
            "s3_secret_key": SecretStr(s3_server.secret_key),
        }
    )
    s3 = s3_client(s3_server)
    with TestClient(create_app(served)) as client:
        job = client.post("/v1/videos", json={"prompt": "x"}).json()
        record = store.get(job["id"])
        stem = f"videos/{record.created_at:%Y/%m/%d}/{job['id']}"
        preview = f"previews/{record.created_at:%Y/%m/%d}/{job['id']}/seg-00000.ts"
        for key, data in (
            (f"{stem}.mp4", b"mp4 bytes"),
            (f"{stem}.jpg", b"jpeg"),
            (f"{stem}.json", b"{}"),
            (preview, b"ts"),
        ):
            s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
        result = JobResult(
            video_key=f"{stem}.mp4",
            thumbnail_key=f"{stem}.jpg",
            bytes=9,
            width=128,
            height=128,
            frames=17,
            fps=8,
            seed=1,
            sha256="0" * 64,
            frames_done=17,
        )
        now = utcnow()
        store.transition(job["id"], {"queued"}, "succeeded", started_at=now, finished_at=now, result=result)
        video = client.get(f"/v1/videos/{job['id']}/content")
        assert video.status_code == 200 and video.content == b"mp4 bytes"
        assert video.headers["content-type"] == "video/mp4"
        thumb = client.get(f"/v1/videos/{job['id']}/content", params={"variant": "thumbnail"})
        assert thumb.content == b"jpeg" and thumb.headers["content-type"] == "image/jpeg"
        native = client.get(f"/jobs/{job['id']}/thumbnail", follow_redirects=False)
        assert native.status_code == 302
        assert client.delete(f"/v1/videos/{job['id']}").status_code == 200
        left = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        assert left == []
