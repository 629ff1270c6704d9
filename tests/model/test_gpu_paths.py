"""GPU-only paths against their eager / reference twins (skipped without CUDA; run by bench/gpu_round.sh).

- CUDA graphs of the cached step across many (unit, stage) caches and shapes, as one generation meets them:
  the capture that crashed on the first GPU run (caching-allocator `use_count > 0` assert on pool reuse).
- A whole tiny generation with graphs on equals the eager one.
- The "triton" scan backend (training): forward and gradients against the plain-PyTorch reference.
"""

from __future__ import annotations

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


def test_step_graphs_recapture_across_many_caches_and_shapes_equals_eager() -> None:
    net = _tiny_net()
    mask = torch.ones(2, 5, dtype=torch.bool, device="cuda")
    mask[1, 3:] = False
    text = TextEmbeddings(torch.randn(2, 5, 384, device="cuda"), mask, torch.randn(2, 384, device="cuda"))
    graphs = StepGraphs(net._forward_cached)
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


def test_tiny_generation_with_cuda_graphs_equals_eager() -> None:
    videos = []
    for graphs in (False, True):
        torch.manual_seed(0)
        opts = RuntimeOptions(cuda_graphs=graphs)  # stand-in text: the GPU machine has no MiniLM package
        pipe = VideoPipeline.from_preset("tiny", device="cuda", runtime=opts, stand_in_text=True)
        req = GenerationRequest(
            prompt="a red circle moving right", width=128, height=128, num_frames=9, seed=3
        )
        videos.append(pipe.generate(req).frames)
        assert pipe.network._graphs.failed is None
    assert (videos[0].astype(int) - videos[1].astype(int)).__abs__().max() <= 1


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
