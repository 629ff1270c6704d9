"""GET /info says what the server accepts; the OpenAPI document names every operation and its errors."""

from __future__ import annotations

from fastapi.testclient import TestClient

from model.config import get_preset


def test_info_describes_the_served_preset_and_limits(client: TestClient) -> None:
    info = client.get("/info").json()
    cfg = get_preset("tiny")
    (preset,) = info["presets"]
    assert preset["name"] == "tiny"
    assert [(r["width"], r["height"]) for r in preset["resolutions"]] == list(cfg.resolutions)
    assert preset["frame_multiple"] == cfg.vae.temporal_factor and preset["max_frames"] == cfg.max_frames
    assert preset["first_frame_steps"]["default"] == list(cfg.sampler.first_frame_steps)
    assert preset["guidance_scale"] == {"default": cfg.sampler.guidance_scale, "min": 0, "max": 30}
    assert info["limits"]["max_prompt_chars"] == 2000 and info["version"]
    # What /info says is accepted is accepted: the largest frame count at the listed size.
    w, h = cfg.resolutions[0]
    body = {
        "prompt": "x",
        "width": w,
        "height": h,
        "num_frames": preset["max_frames"],
        "fps": preset["fps"]["max"],
    }
    assert client.post("/generate", json=body).status_code == 202


def test_every_operation_has_an_id_and_declares_its_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert {
        "create_video",
        "list_videos",
        "retrieve_video",
        "delete_video",
        "download_video_content",
        "generate",
        "list_jobs",
        "get_job",
        "cancel_job",
        "get_job_video",
        "get_job_thumbnail",
        "get_info",
    } <= set(ids)
    for (method, path), op in ops.items():
        if path.startswith(("/jobs", "/v1/", "/generate")):
            assert {"401", "422", "429", "503"} <= set(op["responses"]), (method, path)
    for key in (("post", "/generate"), ("post", "/v1/videos")):
        assert {"409", "413"} <= set(ops[key]["responses"])
    for key in (("get", "/jobs/{id}/video"), ("get", "/v1/videos/{video_id}/content")):
        assert "409" in ops[key]["responses"]
    create = ops[("post", "/v1/videos")]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(create)
    v1_error = ops[("get", "/v1/videos/{video_id}")]["responses"]["404"]["content"]["application/json"][
        "schema"
    ]
    assert v1_error["$ref"].endswith("/OpenAIErrorOut")
