"""GPU-only paths against their eager / reference twins (skipped without CUDA; run by bench/gpu_round.sh).

- CUDA graphs of the cached step across many (unit, stage) caches and shapes, as one generation meets them:
  the capture that crashed on the first GPU run (caching-allocator `use_count > 0` assert on pool reuse).
- A whole tiny generation with graphs on equals the eager one.
- The "triton" scan backend (training): forward and gradients against the plain-PyTorch reference.
- The training step as one CUDA graph against the eager step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from model import ssm_kernels
from model.config import PRESETS, MambaConfig
from model.mamba2 import Mamba2
from model.network import M4VNetwork
from model.pipeline import VideoPipeline
from model.pipeline_types import GenerationRequest
from model.runtime import RuntimeOptions
from model.step_graphs import StepGraphs
from model.text_encoder import TextEmbeddings

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _tiny_net() -> M4VNetwork:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"].network
    return M4VNetwork(cfg, latent_channels=8, text_dim=384, pooled_dim=384, device="cuda")


@pytest.mark.parametrize("lean", [False, True], ids=["two-warmups", "lean-capture"])
def test_step_graphs_recapture_across_many_caches_and_shapes_equals_eager(lean: bool) -> None:
    """lean: one warm-up per capture, its output that step's result (RuntimeOptions.graph_lean_capture)."""
    net = _tiny_net()
    mask = torch.ones(2, 5, dtype=torch.bool, device="cuda")
    mask[1, 3:] = False
    text = TextEmbeddings(torch.randn(2, 5, 384, device="cuda"), mask, torch.randn(2, 384, device="cuda"))
    graphs = StepGraphs(net._forward_cached, warmup=1 if lean else 2, reuse_warmup=lean)
    with torch.no_grad():
        for n_hist in range(1, 5):
            for size in (8, 16, 32):  # the three pyramid stages: a new shape every capture
                hist = [torch.randn(2, 8, 32, 32, device="cuda") for _ in range(n_hist)]
                cache = net.prepare_context(text=text, history=hist, full_hw=(32, 32))
                for step in range(3):
                    x = torch.randn(2, 8, size, size, device="cuda")
                    t = torch.full((2,), 900.0 - 300 * step, device="cuda")
                    got = graphs.run(x, t, cache)
                    torch.testing.assert_close(got, net._forward_cached(x, t, cache), rtol=1e-5, atol=1e-5)
    assert graphs.failed is None
    assert graphs.captures == 12


@pytest.mark.parametrize("overlap", [False, True], ids=["serial-decode", "overlapped-decode"])
def test_tiny_generation_with_cuda_graphs_equals_eager(overlap: bool) -> None:
    videos = []
    for graphs in (False, True):
        torch.manual_seed(0)
        # overlapped: the decode thread runs while the sampler captures (a global-mode capture refused it);
        # stand-in text: the GPU machine has no MiniLM package
        opts = RuntimeOptions(cuda_graphs=graphs, overlap_decode=overlap)
        pipe = VideoPipeline.from_preset("tiny", device="cuda", runtime=opts, stand_in_text=True)
        req = GenerationRequest(
            prompt="a red circle moving right", width=128, height=128, num_frames=9, seed=3
        )
        videos.append(pipe.generate(req).frames)
        assert pipe.network._graphs.failed is None
    assert (videos[0].astype(int) - videos[1].astype(int)).__abs__().max() <= 1


def test_tiny_generation_with_fixed_shape_graphs_equals_eager_and_captures_per_bucket() -> None:
    """RuntimeOptions.graph_fixed_shapes: graphs captured on padded persistent caches and replayed across
    units (overlapped decode on, as the worker runs) give the eager video with fewer captures."""
    req = GenerationRequest(prompt="a red circle moving right", width=128, height=128, num_frames=17, seed=3)
    videos, captures = [], []
    for fixed in (False, True):
        torch.manual_seed(0)
        opts = RuntimeOptions(
            cuda_graphs=fixed, overlap_decode=True, graph_fixed_shapes=fixed, graph_context_bucket=256
        )
        pipe = VideoPipeline.from_preset("tiny", device="cuda", runtime=opts, stand_in_text=True)
        videos.append(pipe.generate(req).frames)
        assert pipe.network._graphs.failed is None
        captures.append(pipe.network._graphs.captures)
    assert (videos[0].astype(int) - videos[1].astype(int)).__abs__().max() <= 1
    assert 3 <= captures[1] < 5 * 3  # 5 units x 3 stages would be one capture each


def test_graphs_only_for_small_steps_give_the_eager_video_with_fewer_captures() -> None:
    """RuntimeOptions.graph_max_tokens: the tiny preset's stages have 16, 64 and 256 current-frame tokens;
    with a limit of 64 the top stage runs eagerly, so 5 units capture 2 graphs each, not 3."""
    req = GenerationRequest(prompt="a red circle moving right", width=128, height=128, num_frames=17, seed=3)
    videos, captures = [], []
    for limit in (None, 64):
        torch.manual_seed(0)
        opts = RuntimeOptions(cuda_graphs=True, overlap_decode=True, graph_max_tokens=limit)
        pipe = VideoPipeline.from_preset("tiny", device="cuda", runtime=opts, stand_in_text=True)
        videos.append(pipe.generate(req).frames)
        assert pipe.network._graphs.failed is None
        captures.append(pipe.network._graphs.captures)
    assert (videos[0].astype(int) - videos[1].astype(int)).__abs__().max() <= 1
    assert captures == [15, 10]


@pytest.mark.skipif(not ssm_kernels.triton_available(), reason="mamba-ssm Triton scan not importable")
def test_triton_backend_forward_and_gradients_match_the_reference() -> None:
    cfg = MambaConfig(d_state=16, headdim=32, chunk_size=64)
    outs, grads = [], []
    for backend in ("ref", "triton"):
        torch.manual_seed(0)
        mixer = Mamba2(128, cfg, backend=backend, device="cuda")
        x = torch.randn(4, 300, 128, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        x.requires_grad_(True)
        out, _ = mixer(x)
        (out.square().mean()).backward()
        outs.append(out.detach())
        grads.append([x.grad, mixer.in_proj.weight.grad, mixer.A_log.grad, mixer.dt_bias.grad])
    rel = float((outs[1] - outs[0]).norm() / outs[0].norm())
    names = ("x", "in_proj.weight", "A_log", "dt_bias")
    grad_rel = {
        n: float((t - r).norm() / r.norm()) for n, r, t in zip(names, grads[0], grads[1], strict=True)
    }
    assert rel < 1e-2, (rel, grad_rel)  # Triton dots run in TF32
    assert max(grad_rel.values()) < 2e-2, (rel, grad_rel)


class _RandomSource:
    """Batches of random latents of the tiny preset's shape (8 x 5 x 32 x 32) and caption rows."""

    def __init__(self, g: torch.Generator) -> None:
        self.data = torch.randn(64, 8, 5, 32, 32, device="cuda", generator=g)
        self.g = g

    def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, 64, (n,), generator=self.g, device="cuda")
        return self.data[idx], torch.randint(0, 4, (n,), generator=self.g, device="cuda")


class _RandomText:
    def __init__(self) -> None:
        g = torch.Generator("cuda").manual_seed(5)
        self.tokens = torch.randn(4, 32, 384, device="cuda", generator=g)
        self.mask = torch.ones(4, 32, dtype=torch.bool, device="cuda")
        self.mask[1:, 20:] = False
        self.pooled = torch.randn(4, 384, device="cuda", generator=g)

    def rows(self, idx: torch.Tensor) -> TextEmbeddings:
        return TextEmbeddings(self.tokens[idx], self.mask[idx], self.pooled[idx])


def _train_step(graph: bool, layout: str, phases: int = 5) -> tuple[Any, M4VNetwork]:
    """A TrainStep of the tiny network on random latents (5 latent frames) and random text."""
    from model.train.flow_loss import NetTrainConfig
    from model.train.train_step import TrainStep, step_generator

    net = _tiny_net()
    tc = NetTrainConfig(batch=10, unit_layout=layout, cuda_graph=graph, warmup=4, lr=1e-3)  # type: ignore[arg-type]
    g = step_generator(torch.device("cuda"), 11, graph=True)  # both runs draw from the default generator
    source = _RandomSource(g)
    step = TrainStep(
        net,
        source,
        _RandomText(),
        PRESETS["tiny"],
        tc,
        torch.device("cuda"),
        g,
        torch.Generator(),
        phases=phases,
    )
    return step, net


def _losses(step: Any, steps: int) -> list[float]:
    losses: list[float] = []
    while len(losses) < steps:
        out, taken = step()
        losses += [float("nan")] * (taken - 1) + [out["loss"].item()]
    return losses


def _train(
    graph: bool, steps: int, layout: str = "all"
) -> tuple[list[float], M4VNetwork, dict[str, torch.Tensor]]:
    step, net = _train_step(graph, layout)
    return _losses(step, steps), net, step.ema.shadow


@pytest.mark.parametrize("layout", ["all", "cycle"])
def test_cuda_graph_training_step_follows_the_eager_step(layout: str) -> None:
    """The whole step (batch draw, loss, backward, clip, AdamW with a warming-up learning rate, EMA with a
    warming-up decay) as one replayed graph gives the eager step's losses, weights and EMA: same random draws,
    same updates. "cycle": one graph per phase (5 latent frames), after 5 warm-up steps, each replayed once
    and the first twice."""
    steps = 6 if layout == "all" else 11
    eager_losses, eager, eager_ema = _train(False, steps, layout)
    graph_losses, graphed, graph_ema = _train(True, steps, layout)
    assert graph_losses[-1] == pytest.approx(eager_losses[-1], rel=2e-2)
    assert graph_losses[-2] == pytest.approx(eager_losses[-2], rel=2e-2)
    for (name, a), b in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-3, msg=name)
    for name, a in eager_ema.items():  # the EMA's warm-up weight is a device tensor the replays read
        torch.testing.assert_close(graph_ema[name], a, rtol=2e-2, atol=2e-3, msg=f"ema {name}")
    assert graph_losses[-1] != graph_losses[-2]  # replays draw new batches and noise


def test_cycle_graphs_for_a_wrong_phase_count_fall_back_to_eager_steps_and_say_why() -> None:
    """Graph p must train the same units at every replay: 2 phases for 5-frame clips would not."""
    step, _ = _train_step(True, "cycle", phases=2)
    losses = _losses(step, 4)
    assert step.failed is not None and "not a multiple of 5 frames" in step.failed
    assert not step.graph and all(torch.isfinite(torch.tensor(x)) for x in losses)
