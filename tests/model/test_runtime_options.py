"""Speed options leave results unchanged: batched VAE tiles, bounded cache, overlapped decode, step graphs."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from model.config import PRESETS
from model.network import M4VNetwork
from model.pipeline import VideoPipeline
from model.pipeline_types import DecodedChunk, GenerationRequest
from model.runtime import RuntimeOptions
from model.step_graphs import StepGraphs
from model.text_encoder import TextEmbeddings
from model.vae import CausalVAE
from model.vae_stream import BatchedStreamingDecoder, stream_decoder

TINY_VAE = dataclasses.replace(PRESETS["tiny"].vae, tile_px=96, tile_overlap=0.25)  # 2 x 2 tiles at 128 px


@pytest.mark.slow
@torch.no_grad()
@pytest.mark.parametrize("tile_batch", [3])
def test_batched_tiles_decode_the_same_frames_as_one_tile_at_a_time(tile_batch: int) -> None:
    torch.manual_seed(0)
    vae = CausalVAE(TINY_VAE).eval()
    ref, fast = vae.stream_decoder(), BatchedStreamingDecoder(vae, tile_batch)
    for _ in range(2):
        z = torch.randn(1, 8, 1, 32, 32)
        want, got = ref.decode_next(z), fast.decode_next(z)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(fast.caches) == 2 and fast.frames_done == ref.frames_done == 5  # tiles {0,1,2}, {3}


@torch.no_grad()
def test_streaming_cache_keeps_only_the_frames_it_needs() -> None:
    torch.manual_seed(0)
    vae = CausalVAE(PRESETS["tiny"].vae).eval()
    dec = vae.stream_decoder()
    for _ in range(2):  # the second latent frame runs 4 frames through the temporally up-sampled levels
        dec.decode_next(torch.randn(1, 8, 1, 16, 16))
    (cache,) = dec.caches.values()
    for tail in cache.tails.values():
        assert tail.shape[2] == 2  # kernel 3: two past frames
        assert tail.untyped_storage().nbytes() == tail.numel() * tail.element_size()  # no hidden frames


def _req() -> GenerationRequest:
    return GenerationRequest(
        prompt="a red fox", width=128, height=128, num_frames=5, seed=3,
        first_frame_steps=(1, 1, 1), later_frame_steps=(1, 1, 1),
    )  # fmt: skip


@pytest.mark.slow
def test_overlapped_decode_and_batched_tiles_give_the_same_video_in_unit_order() -> None:
    torch.manual_seed(0)
    ref = VideoPipeline.from_preset("tiny")
    opts = RuntimeOptions(overlap_decode=True, vae_tile_batch=4, attention_backend="sdpa_split")
    fast = VideoPipeline(
        ref.cfg, ref.network, ref.vae, ref.text_encoder, device="cpu", dtype=torch.float32, runtime=opts
    )
    chunks: list[DecodedChunk] = []
    want = ref.generate(_req()).frames
    got = fast.generate(_req(), on_chunk=chunks.append).frames
    assert [c.unit for c in chunks] == [0, 1] and [c.first_frame for c in chunks] == [0, 1]
    assert got.shape == want.shape == (5, 128, 128, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # uint8 rounding of fp32 noise


def test_channels_last_vae_gives_the_same_video() -> None:
    torch.manual_seed(0)
    ref = VideoPipeline.from_preset("tiny")
    vae = copy.deepcopy(ref.vae)  # the option converts the VAE in place
    opts = RuntimeOptions(vae_channels_last=True, cudnn_benchmark=True)  # cudnn: a no-op on the CPU
    fast = VideoPipeline(
        ref.cfg, ref.network, vae, ref.text_encoder, device="cpu", dtype=torch.float32, runtime=opts
    )
    conv = next(m for m in fast.vae.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    want, got = ref.generate(_req()).frames, fast.generate(_req()).frames
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_overlapped_decode_errors_surface_from_generate() -> None:
    torch.manual_seed(0)
    pipe = VideoPipeline.from_preset("tiny", runtime=RuntimeOptions(overlap_decode=True))

    def boom(chunk: DecodedChunk) -> None:
        raise RuntimeError(f"sink failed at unit {chunk.unit}")

    with pytest.raises(RuntimeError, match="sink failed at unit 0"):
        pipe.generate(_req(), on_chunk=boom)


def _tiny_net(**runtime: object) -> M4VNetwork:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"].network
    return M4VNetwork(cfg, latent_channels=8, text_dim=384, pooled_dim=384, runtime=RuntimeOptions(**runtime))  # type: ignore[arg-type]


@pytest.mark.slow
def test_step_graphs_reuse_static_buffers_per_cache_and_recapture_on_a_new_one() -> None:
    net = _tiny_net()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    text = TextEmbeddings(torch.randn(2, 5, 384), mask, torch.randn(2, 384))
    graphs = StepGraphs(net._forward_cached)
    with torch.no_grad():
        for n_hist in (1, 2):
            hist = [torch.randn(2, 8, 16, 16) for _ in range(n_hist)]
            cache = net.prepare_context(text=text, history=hist, full_hw=(16, 16))
            outs = []
            for step in range(3):
                x, t = torch.randn(2, 8, 16, 16), torch.full((2,), 800.0 - 200 * step)
                got = graphs.run(x, t, cache)
                torch.testing.assert_close(got, net(x, t, cache=cache), rtol=1e-5, atol=1e-5)
                outs.append(got)
            assert outs[0].data_ptr() != outs[1].data_ptr()  # callers get copies, not the static output
            assert not torch.equal(outs[0], outs[1])
    assert graphs.captures == 2  # one per (unit, stage) cache


def test_compile_option_compiles_every_block() -> None:
    net = _tiny_net(compile=True)
    blocks = [*net.double_blocks, *net.single_blocks]
    assert all(hasattr(b.forward, "_torchdynamo_orig_callable") for b in blocks)
    assert all(hasattr(b.forward_cached, "_torchdynamo_orig_callable") for b in blocks)
    assert not hasattr(_tiny_net().double_blocks[0].forward, "_torchdynamo_orig_callable")


def test_worker_settings_turn_the_options_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from m4v_core import Settings
    from worker.pipeline import runtime_options

    assert runtime_options(Settings()) == RuntimeOptions()
    # graphs "auto": on for bf16 M4V presets only (measured faster there), off for the attention baseline
    assert runtime_options(Settings(preset="m4v-768p"), torch.bfloat16).cuda_graphs is True
    assert runtime_options(Settings(preset="attn-768p"), torch.bfloat16).cuda_graphs is False
    assert runtime_options(Settings(preset="m4v-768p"), torch.float32).cuda_graphs is False
    off = Settings(preset="m4v-768p", cuda_graphs=False)
    assert runtime_options(off, torch.bfloat16).cuda_graphs is False
    # overlap "auto": on for CUDA devices only (measured there); lean capture on unless turned off
    assert runtime_options(Settings(), torch.bfloat16, "cuda:0").overlap_decode is True
    assert runtime_options(Settings(), torch.float32, "cpu").overlap_decode is False
    assert runtime_options(Settings(overlap_decode=False), torch.bfloat16, "cuda").overlap_decode is False
    assert runtime_options(Settings(graph_lean_capture=False)).graph_lean_capture is False
    assert runtime_options(Settings(vae_tile_px=1280)).vae_tile_px == 1280
    fixed = runtime_options(Settings(graph_fixed_shapes=True, graph_context_bucket=2048))
    assert (fixed.graph_fixed_shapes, fixed.graph_context_bucket) == (True, 2048)
    assert runtime_options(Settings()).graph_fixed_shapes is False  # off until measured on a GPU
    assert runtime_options(Settings(graph_max_tokens=1024)).graph_max_tokens == 1024
    assert runtime_options(Settings()).graph_max_tokens is None  # every step graphed until measured
    monkeypatch.setenv("M4V_ATTENTION_BACKEND", "sdpa_split")
    monkeypatch.setenv("M4V_COMPILE_BLOCKS", "true")
    monkeypatch.setenv("M4V_CUDA_GRAPHS", "true")
    monkeypatch.setenv("M4V_VAE_TILE_BATCH", "4")
    monkeypatch.setenv("M4V_OVERLAP_DECODE", "true")
    opts = runtime_options(Settings())
    assert opts == RuntimeOptions("sdpa_split", True, "default", True, 4, True)


def test_cudnn_benchmark_with_graphs_and_overlapped_decode_is_refused_by_name() -> None:
    # on an H100 cuDNN's algorithm timing in the decode thread invalidated the sampler's graph capture
    with pytest.raises(ValueError, match="cudnn_benchmark cannot be combined with cuda_graphs and overlap"):
        RuntimeOptions(cudnn_benchmark=True, cuda_graphs=True, overlap_decode=True)
    for two in ({"cuda_graphs": True}, {"overlap_decode": True}):
        assert RuntimeOptions(cudnn_benchmark=True, **two).cudnn_benchmark  # any two of the three are fine


@torch.no_grad()
@pytest.mark.parametrize("tile_batch", [1, 2])
def test_a_tile_size_override_decodes_as_a_vae_built_with_that_tile_size(tile_batch: int) -> None:
    torch.manual_seed(0)
    vae = CausalVAE(TINY_VAE).eval()  # its own tiles: 96 px, 2 x 2 at 128 px
    whole = CausalVAE(dataclasses.replace(TINY_VAE, tile_px=128)).eval()
    whole.load_state_dict(vae.state_dict())
    got_dec = stream_decoder(vae, tile_batch, tile_px=128)  # one tile: the frame decoded whole
    want_dec, tiled_dec = whole.stream_decoder(), vae.stream_decoder()
    for _ in range(2):
        z = torch.randn(1, 8, 1, 32, 32)  # 128 px: 2 x 2 tiles of 96 px, or one of 128
        got, want, tiled = got_dec.decode_next(z), want_dec.decode_next(z), tiled_dec.decode_next(z)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert (got - tiled).abs().max() > 1e-4  # the override changed the tiling: the test can fail
    assert len(got_dec.caches) == 1 and len(tiled_dec.caches) == 4


def test_a_tile_size_below_one_latent_pixel_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="vae_tile_px 4 must be >= 8"):
        RuntimeOptions(vae_tile_px=4)


def test_graph_max_tokens_is_checked_and_named_in_the_label() -> None:
    with pytest.raises(ValueError, match="graph_max_tokens 0"):
        RuntimeOptions(cuda_graphs=True, graph_max_tokens=0)
    assert RuntimeOptions(cuda_graphs=True, graph_max_tokens=1024).label() == "sdpa_mask+graphs+lean+max1024"
    assert RuntimeOptions(graph_max_tokens=1024).label() == "sdpa_mask"  # no graphs, nothing to limit


@torch.no_grad()
@pytest.mark.parametrize("kind", ["m4v", "pyramidflow"])
@pytest.mark.parametrize("frame_chunk", [1, 3])
def test_a_frame_chunked_decode_gives_the_same_frames(kind: str, frame_chunk: int) -> None:
    """Decoder blocks fed a latent frame's up-sampled frames in chunks (1: one by one; 3: 4 frames as 3 + 1)
    stream through the causal caches to the unchunked frames, for both decoders and batched tiles."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY_VAE, kind=kind, tile_px=128)  # the tiny VAE: x4 in time, 4 frames a latent
    vae = CausalVAE(cfg).eval()
    for p in vae.parameters():  # fresh GroupNorm affines are 1/0: perturb them so the frames differ
        p.add_(0.05 * torch.randn_like(p))
    decoders = [
        stream_decoder(vae, batch, frame_chunk=chunk)
        for batch, chunk in [(1, None), (1, frame_chunk), (2, frame_chunk)]
    ]
    seen = []
    for _ in range(3):
        z = torch.randn(1, 8, 1, 32, 32)
        want, got, got_batched = (dec.decode_next(z) for dec in decoders)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_batched, want, rtol=1e-5, atol=1e-5)
        seen.append(want)
    assert seen[1].shape[2] == 4 and (seen[1] - seen[2]).abs().max() > 1e-3  # frames vary: the test can fail
    assert RuntimeOptions(vae_frame_chunk=2).label() == "sdpa_mask+chunk2"
    with pytest.raises(ValueError, match="vae_frame_chunk 0 must be >= 1"):
        RuntimeOptions(vae_frame_chunk=0)
