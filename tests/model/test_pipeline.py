"""VideoPipeline end to end on the tiny preset: real network, real VAE, real MiniLM text encoder, CPU.

Most tests use one step per stage and 5 frames (2 latent frames) to stay at a few seconds each.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint_source import RandomWeightsRefusedError
from model.config import get_preset
from model.loading import save_checkpoint
from model.pipeline import VideoPipeline
from model.pipeline_types import DecodedChunk, GenerationRequest, StepProgress

FAST = {"first_frame_steps": (1, 1, 1), "later_frame_steps": (1, 1, 1)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny tensors on a shared 2-core machine: intra-op threads only spin against each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe(_one_thread: None) -> VideoPipeline:
    torch.manual_seed(0)  # random weights unless the tiny checkpoint ships
    return VideoPipeline.from_preset("tiny")


def _req(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"prompt": "a red fox in snow", "width": 128, "height": 128, "num_frames": 5}
    fields["seed"] = 7
    fields.update(FAST)
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def test_tiny_generate_returns_17_uint8_frames_with_timings_and_flops(pipe: VideoPipeline) -> None:
    result = pipe.generate(_req(num_frames=17, later_frame_steps=(2, 1, 1)))
    assert result.frames.shape == (17, 128, 128, 3)
    assert result.frames.dtype == np.uint8
    assert result.seed == 7
    assert result.frames.std() > 1.0  # not a constant image
    t = result.timings
    assert t.text_s > 0 and t.sampling_s > 0 and t.decode_s > 0
    assert {"vae", "mlp", "mixer_mamba"} <= set(result.flops)
    assert result.total_flops > 0
    assert result.peak_memory_bytes == 0  # CPU


def test_same_seed_same_video_other_seed_differs(pipe: VideoPipeline) -> None:
    a = pipe.generate(_req()).frames
    b = pipe.generate(_req()).frames
    c = pipe.generate(_req(seed=8)).frames
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0


def test_on_progress_after_every_step_in_order(pipe: VideoPipeline) -> None:
    seen: list[StepProgress] = []
    pipe.generate(_req(first_frame_steps=(2, 1, 1)), on_progress=seen.append)
    assert [p.steps_done for p in seen] == list(range(1, 8))
    assert {p.steps_all for p in seen} == {7}
    assert [(p.unit, p.stage, p.step) for p in seen][:2] == [(0, 0, 1), (0, 0, 2)]
    assert [p.unit for p in seen] == [0, 0, 0, 0, 1, 1, 1]


def test_raising_in_on_progress_stops_generation(pipe: VideoPipeline) -> None:
    class CanceledError(Exception):
        pass

    def cancel(p: StepProgress) -> None:
        if p.steps_done == 2:
            raise CanceledError

    calls: list[int] = []
    chunks: list[DecodedChunk] = []
    handle = pipe.network.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(CanceledError):
            pipe.generate(_req(), on_progress=cancel, on_chunk=chunks.append)
    finally:
        handle.remove()
    assert len(calls) == 2
    assert chunks == []


def test_on_chunk_streams_each_unit_in_order_and_concatenates_to_the_video(pipe: VideoPipeline) -> None:
    chunks: list[DecodedChunk] = []
    result = pipe.generate(_req(num_frames=9), on_chunk=chunks.append)
    assert [c.unit for c in chunks] == [0, 1, 2]
    assert [c.frames.shape[0] for c in chunks] == [1, 4, 4]
    assert [c.first_frame for c in chunks] == [0, 1, 5]
    assert all(c.frames.dtype == np.uint8 for c in chunks)
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), result.frames)


def test_cached_and_uncached_pipelines_make_the_same_video(pipe: VideoPipeline) -> None:
    uncached = VideoPipeline(
        pipe.cfg,
        pipe.network,
        pipe.vae,
        pipe.text_encoder,
        device="cpu",
        dtype=torch.float32,
        use_cache=False,
    )
    a = pipe.generate(_req()).frames.astype(int)
    b = uncached.generate(_req()).frames.astype(int)
    assert np.abs(a - b).max() <= 1  # fp32 agreement to ~1e-5, at most one rounding step of uint8


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"width": 256}, "width/height"),
        ({"height": 64}, "width/height"),
        ({"num_frames": 6}, "num_frames"),
        ({"num_frames": 37}, "num_frames"),
        ({"num_frames": 0}, "num_frames"),
        ({"first_frame_steps": (1, 1)}, "first_frame_steps"),
        ({"later_frame_steps": (1, 0, 1)}, "later_frame_steps"),
    ],
)
def test_generate_rejects_requests_the_preset_cannot_serve(
    pipe: VideoPipeline, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        pipe.generate(_req(**overrides))


def test_from_preset_without_weights_refuses_a_non_tiny_preset() -> None:
    cfg = dataclasses.replace(get_preset("tiny"), name="tiny-unshipped")
    with pytest.raises(RandomWeightsRefusedError, match="tiny-unshipped.*huggingface-cli download"):
        VideoPipeline.from_preset(cfg, stand_in_text=True)


def test_random_weights_opt_in_logs_an_error_banner(caplog: pytest.LogCaptureFixture) -> None:
    cfg = dataclasses.replace(get_preset("tiny"), name="tiny-unshipped")
    with caplog.at_level(logging.WARNING, logger="model.checkpoint_source"):
        pipe = VideoPipeline.from_preset(cfg, stand_in_text=True, allow_random_weights=True)
    assert pipe.cfg.name == "tiny-unshipped" and pipe.weights_source == "random"
    banners = [r for r in caplog.records if "RANDOM weights" in r.getMessage()]
    assert banners and all(r.levelno == logging.ERROR for r in banners)


def test_from_preset_loads_the_given_checkpoint(pipe: VideoPipeline, tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, pipe.cfg, {"network": pipe.network, "vae": pipe.vae})
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = VideoPipeline.from_preset("tiny", weights=str(path), stand_in_text=True)
    for name, module in (("network", loaded.network), ("vae", loaded.vae)):
        theirs = getattr(pipe, name).state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, theirs[key]), f"{name}.{key}"
