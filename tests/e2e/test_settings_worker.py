"""A worker built from real Settings (no hand-built pipeline) serves a scaled-down 768p-shaped preset: weights
from a checkpoint directory, T5 + CLIP from tiny save_pretrained models in either folder layout, a job through
the API to a playable MP4, and /workers reporting the weights and their sha256.

Real Redis, rq, SeaweedFS, network, VAE and text encoders (tests/e2e/test_api_worker.py has the rest of the
spine: webhooks, events, metrics)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from m4v_cli.seaweed import SeaweedS3
from model.config import PRESETS
from model.loading import save_checkpoint
from model.network import M4VNetwork
from model.vae import CausalVAE
from service.app import create_app
from tests.small_presets import small_768p
from tests.tiny_text_models import save_diffusers_layout, save_transformers_layout
from tests.worker.jobs_helpers import make_settings
from worker.main import build_worker
from worker.pipeline import weights_sha256


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["transformers", "diffusers"])
def test_worker_from_settings_serves_a_768p_shaped_preset_to_an_mp4(
    redis_url: str,
    key_prefix: str,
    s3_server: SeaweedS3,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
) -> None:
    cfg = small_768p()
    monkeypatch.setitem(PRESETS, cfg.name, cfg)
    ckpt = tmp_path / "weights"
    torch.manual_seed(0)
    save_checkpoint(ckpt, cfg, {"network": M4VNetwork.for_preset(cfg), "vae": CausalVAE(cfg.vae)})
    text: dict[str, str] = {}
    if layout == "transformers":  # explicit M4V_T5_PATH / M4V_CLIP_PATH
        t5, clip = save_transformers_layout(tmp_path / "text")
        text = {"t5_path": str(t5), "clip_path": str(clip)}
    else:  # PyramidFlow's layout inside the weights folder: M4V_WEIGHTS alone is enough
        save_diffusers_layout(ckpt)
    settings = make_settings(
        redis_url, key_prefix, s3_server, s3_bucket, preset=cfg.name, weights=str(ckpt), device="cpu", **text
    )
    with TestClient(create_app(settings)) as api:
        body = {
            "prompt": "a red car in the city",
            "seed": 5,
            "num_frames": 9,
            "first_frame_steps": [1, 1, 1],
            "later_frame_steps": [1, 1, 1],
        }
        r = api.post("/generate", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        process = build_worker(settings)  # loads the pipeline from the settings alone
        assert type(process.context.pipeline.text_encoder).__name__ == "T5ClipEncoder"
        process.start()
        try:
            workers = api.get("/workers").json()["workers"]
            assert [w["weights"] for w in workers] == [str(ckpt)]
            assert workers[0]["weights_sha256"] == weights_sha256(ckpt)
            assert workers[0]["random_weights"] is False and workers[0]["preset"] == cfg.name
            process.worker.work(burst=True)
        finally:
            process.stop()

        job = api.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job
        assert job["result"]["frames"] == 9
        redirect = api.get(f"/jobs/{job_id}/video", follow_redirects=False)
        assert redirect.status_code == 302
        video = httpx.get(redirect.headers["location"])
        assert video.status_code == 200
    with av.open(io.BytesIO(video.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (128, 128, 3)
