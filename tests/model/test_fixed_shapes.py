"""Fixed-shape cached steps (RuntimeOptions.graph_fixed_shapes, model/fixed_shapes.py): padded, persistent
caches give the plain cached step's velocity, and one captured step per (stage, context bucket) serves
every unit that fits it (on a CPU, StepGraphs runs its static-buffer logic eagerly, as replays rely on)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from model.config import PRESETS
from model.fixed_shapes import capacity
from model.network import ContextCache, M4VNetwork
from model.pipeline import VideoPipeline
from model.pipeline_types import GenerationRequest
from model.runtime import RuntimeOptions
from model.step_graphs import StepGraphs
from model.text_encoder import TextEmbeddings

TINY = PRESETS["tiny"].network
FULL_HW = (32, 32)


def nets(single_block: str, bucket: int) -> tuple[M4VNetwork, M4VNetwork]:
    """(plain, fixed-shape): identical weights, the temporal branch's output projection randomised."""
    cfg = dataclasses.replace(TINY, single_block=single_block)
    torch.manual_seed(0)
    plain = M4VNetwork(cfg, latent_channels=8, text_dim=384, pooled_dim=384).eval()
    for name, p in plain.named_parameters():
        if "temporal.proj" in name:
            torch.nn.init.normal_(p, std=0.05)
    opts = RuntimeOptions(graph_fixed_shapes=True, graph_context_bucket=bucket)
    fixed = M4VNetwork(cfg, latent_channels=8, text_dim=384, pooled_dim=384, runtime=opts).eval()
    fixed.load_state_dict(plain.state_dict())
    return plain, fixed


def graphed(single_block: str, bucket: int, keep: int = 8) -> tuple[M4VNetwork, M4VNetwork, StepGraphs]:
    """nets() and a StepGraphs over the fixed-shape network's step that forgets a graph with its cache."""
    plain, fixed = nets(single_block, bucket)
    assert fixed._fixed is not None
    graphs = StepGraphs(fixed._forward_cached, warmup=1, reuse_warmup=True, keep=keep)
    fixed._fixed.on_drop = graphs.drop
    return plain, fixed, graphs


def text() -> TextEmbeddings:
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 4:] = False  # the empty prompt's padding must stay masked in the padded buffers too
    return TextEmbeddings(torch.randn(2, 9, 384), mask, torch.randn(2, 384))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_capacity_rounds_up_to_whole_buckets() -> None:
    assert [capacity(n, 64) for n in (0, 1, 64, 65, 200)] == [64, 64, 64, 128, 256]


Step = tuple[torch.Tensor, torch.Tensor, ContextCache, ContextCache]


def sampler_order(plain: M4VNetwork, fixed: M4VNetwork, units: int) -> Iterator[Step]:
    """(x, t, plain cache, fixed-shape network's cache) in the sampler's order: unit by unit, the three
    stage sizes, two steps each, the history growing by one frame per unit."""
    tx = text()
    for unit in range(units):
        hist = [torch.randn(2, 8, 8, 8) for _ in range(unit)]
        for size in (8, 16, 32):
            c_plain = plain.prepare_context(text=tx, history=hist, full_hw=FULL_HW)
            c_fixed = fixed.prepare_context(text=tx, history=hist, full_hw=FULL_HW)
            for step in range(2):
                yield torch.randn(2, 8, size, size), torch.full((2,), 800.0 - 150 * step), c_plain, c_fixed


@pytest.mark.parametrize("single_block", ["mmdim", "attention"])
@torch.no_grad()
def test_fixed_shape_steps_equal_the_plain_cached_steps(single_block: str) -> None:
    """Units 0-4: the padded keys, the padded temporal history and the frame index read from a tensor
    change nothing beyond float rounding."""
    plain, fixed = nets(single_block, bucket=64)
    for x, t, c_plain, c_fixed in sampler_order(plain, fixed, units=5):
        assert rel(fixed(x, t, cache=c_fixed), plain(x, t, cache=c_plain)) < 1e-5


@torch.no_grad()
def test_one_captured_step_per_stage_and_bucket_serves_every_unit() -> None:
    """Through StepGraphs with the persistent caches: 3 captures for 6 units while the context fits one
    bucket (18 without fixed shapes), and every replayed step equals the plain cached step: a cache that
    was not refilled (a stale frame index, old keys) fails."""
    plain, fixed, graphs = graphed("mmdim", bucket=4096)
    assert fixed._fixed is not None
    worst = 0.0
    for x, t, c_plain, c_fixed in sampler_order(plain, fixed, units=6):
        static = fixed._fixed.load(c_fixed, x.shape[-1] * x.shape[-2] // 4)
        worst = max(worst, rel(graphs.run(x, t, static), plain(x, t, cache=c_plain)))
    assert graphs.captures == 3
    assert worst < 1e-5


@torch.no_grad()
def test_a_context_past_its_bucket_gets_a_new_capture_and_the_old_graph_is_dropped() -> None:
    _, fixed, graphs = graphed("mmdim", bucket=16)
    assert fixed._fixed is not None
    tx = text()
    for unit in range(4):  # 9 text tokens + 16 per history frame: 9, 25, 41, 57 -> buckets 16, 32, 48, 64
        hist = [torch.randn(2, 8, 8, 8) for _ in range(unit)]
        cache = fixed.prepare_context(text=tx, history=hist, full_hw=FULL_HW)
        graphs.run(torch.randn(2, 8, 8, 8), torch.full((2,), 500.0), fixed._fixed.load(cache, 16))
    assert graphs.captures == 4
    assert len(graphs._entries) == 1  # each replaced persistent cache took its graph along


@torch.no_grad()
def test_persistent_caches_of_other_sizes_are_bounded_and_take_their_graphs_along() -> None:
    from model.fixed_shapes import MAX_STATICS

    _, fixed, graphs = graphed("mmdim", bucket=64, keep=16)
    assert fixed._fixed is not None
    cache = fixed.prepare_context(text=text(), history=[], full_hw=(32, 64))
    for i in range(MAX_STATICS + 2):  # current frames of MAX_STATICS + 2 sizes (other resolutions)
        w = 8 + 2 * i
        graphs.run(torch.randn(2, 8, 8, w), torch.full((2,), 500.0), fixed._fixed.load(cache, 4 * w // 2))
    assert len(fixed._fixed._statics) == MAX_STATICS
    assert len(graphs._entries) == MAX_STATICS


def test_fixed_shapes_need_the_dense_mask_backend() -> None:
    with pytest.raises(ValueError, match="graph_fixed_shapes needs attention_backend 'sdpa_mask'"):
        RuntimeOptions(graph_fixed_shapes=True, attention_backend="flex")


@pytest.mark.slow
def test_a_tiny_generation_with_fixed_shapes_gives_the_same_video() -> None:
    req = GenerationRequest(
        prompt="a red fox", width=128, height=128, num_frames=13, seed=3,
        first_frame_steps=(2, 1, 1), later_frame_steps=(1, 1, 1),
    )  # fmt: skip
    frames = []
    for opts in (RuntimeOptions(), RuntimeOptions(graph_fixed_shapes=True, graph_context_bucket=32)):
        pipe = VideoPipeline.from_preset("tiny", device="cpu", dtype=torch.float32, runtime=opts)
        frames.append(pipe.generate(req).frames.astype(np.int16))
    assert frames[0].shape == frames[1].shape
    assert np.abs(frames[0] - frames[1]).max() <= 1
