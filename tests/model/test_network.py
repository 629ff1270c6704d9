"""M4VNetwork: shapes, parameter count, paper mode, and the context cache (cached == uncached, less work)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import PRESETS, NetworkConfig
from model.network import M4VNetwork
from model.text_encoder import TextEmbeddings
from tests.model.network_helpers import FULL_HW, TEXT_DIM, TINY, C, make_net, make_text


def pyramid_history(batch: int = 2, frames: int = 3) -> list[torch.Tensor]:
    """Compressed pyramid for a current frame at full res: older frames at 8x8, then 16x16, then 32x32."""
    sizes = ([8] * frames + [16, 32])[-frames:] if frames else []  # oldest first
    return [torch.randn(batch, C, s, s) for s in sizes]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_tiny_forward_returns_a_finite_velocity_shaped_like_the_current_frame() -> None:
    net = make_net()
    text = make_text()
    with torch.no_grad():
        x = torch.randn(2, C, 16, 16)  # stage 1: history k-1 at 16x16, older at 8x8
        hist = [torch.randn(2, C, 8, 8), torch.randn(2, C, 16, 16)]
        v = net(x, torch.full((2,), 700.0), text=text, history=hist, full_hw=FULL_HW)
    assert v.shape == x.shape
    assert torch.isfinite(v).all()


def expected_params(cfg: NetworkConfig, c: int, text_dim: int, pooled_dim: int) -> int:
    """Parameter count written out from the architecture, independent of the code."""
    w, hid, hd, p = cfg.width, int(cfg.width * cfg.mlp_ratio), cfg.head_dim, cfg.patch_size

    def lin(i: int, o: int) -> int:
        return i * o + o

    embed = lin(c * p * p, w) + lin(text_dim, w) + lin(256, w) + lin(w, w) + lin(pooled_dim, w) + lin(w, w)
    stream = lin(w, 6 * w) + lin(w, 3 * w) + 2 * hd + lin(w, w) + lin(w, hid) + lin(hid, w)
    final = lin(w, p * p * c) + lin(w, 2 * w)
    m = cfg.mamba
    d_in, nh = m.d_inner(w), m.nheads(w)
    conv_dim = d_in + 2 * m.ngroups * m.d_state
    mamba = w * m.in_proj_width(w) + conv_dim * (m.d_conv + 1) + 3 * nh + d_in + d_in * w
    t_in = cfg.temporal_heads * hd  # temporal branch: heads of the network head dim
    temporal = lin(w, 3 * t_in) + 2 * hd + lin(t_in, w)
    mmdim = lin(w, 3 * w) + mamba + cfg.max_latent_frames * w + temporal + lin(w, hid) + lin(w + hid, w)
    attn = lin(w, 3 * w) + lin(w, 3 * w + hid) + 2 * hd + lin(w + hid, w)
    single = mmdim if cfg.single_block == "mmdim" else attn
    return embed + cfg.num_dual_blocks * 2 * stream + cfg.num_single_blocks * single + final


@pytest.mark.parametrize("preset", ["m4v-768p", "attn-768p", "tiny"])
def test_parameter_count_matches_the_architecture(preset: str) -> None:
    mc = PRESETS[preset]
    net = M4VNetwork(
        mc.network,
        latent_channels=mc.vae.latent_channels,
        text_dim=mc.text.token_dim,
        pooled_dim=mc.text.pooled_dim,
        device="meta",
    )
    n = sum(p.numel() for p in net.parameters())
    assert n == expected_params(mc.network, mc.vae.latent_channels, mc.text.token_dim, mc.text.pooled_dim)
    if preset != "tiny":
        assert 1.9e9 < n < 2.3e9, n  # "about 2B parameters"


@pytest.mark.parametrize("preset", ["m4v-768p", "attn-768p"])
def test_768p_network_builds_and_runs_on_the_meta_device(preset: str) -> None:
    mc = PRESETS[preset]
    net = M4VNetwork(mc.network, latent_channels=16, text_dim=4096, pooled_dim=768, device="meta")
    text = TextEmbeddings(
        torch.zeros(2, 5, 4096, device="meta"),
        torch.ones(2, 5, dtype=torch.bool, device="meta"),
        torch.zeros(2, 768, device="meta"),
    )
    hist = [torch.zeros(2, 16, 8, 12, device="meta"), torch.zeros(2, 16, 16, 24, device="meta")]
    x = torch.zeros(2, 16, 32, 48, device="meta")
    v = net(x, torch.zeros(2, device="meta"), text=text, history=hist, full_hw=(32, 48))
    assert v.shape == x.shape and v.device.type == "meta"


def test_paper_mode_runs_uncached_and_refuses_to_prepare_a_context() -> None:
    net = make_net(dataclasses.replace(TINY, context_mode="paper"))
    text, hist = make_text(), pyramid_history()
    with torch.no_grad():
        v = net(torch.randn(2, C, 32, 32), torch.full((2,), 300.0), text=text, history=hist, full_hw=FULL_HW)
    assert v.shape == (2, C, 32, 32) and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="causal"):
        net.prepare_context(text=text, history=hist, full_hw=FULL_HW)


@pytest.mark.parametrize("single_block", ["mmdim", "attention"])
@pytest.mark.parametrize(("n_hist", "size"), [(0, 8), (3, 32)])
def test_cached_forward_matches_uncached(single_block: str, n_hist: int, size: int) -> None:
    net = make_net(dataclasses.replace(TINY, single_block=single_block))
    text = make_text()
    hist = pyramid_history(frames=n_hist)
    with torch.no_grad():
        cache = net.prepare_context(text=text, history=hist, full_hw=FULL_HW)
        for sigma in (0.9, 0.4):  # the same cache serves several steps
            x, t = torch.randn(2, C, size, size), torch.full((2,), sigma * 1000)
            cached = net(x, t, cache=cache)
            full = net(x, t, text=text, history=hist, full_hw=FULL_HW)
            assert rel_err(cached, full) <= 1e-4


@pytest.mark.parametrize("single_block", ["mmdim", "attention"])
def test_cached_step_runs_only_the_current_frame_tokens(single_block: str) -> None:
    net = make_net(dataclasses.replace(TINY, single_block=single_block))
    text, hist = make_text(), pyramid_history()
    x, t = torch.randn(2, C, 32, 32), torch.full((2,), 500.0)
    with torch.no_grad():
        cache = net.prepare_context(text=text, history=hist, full_hw=FULL_HW)
        net.reset_token_counts()
        net(x, t, text=text, history=hist, full_hw=FULL_HW)
        uncached = dict(net.token_counts)
        net.reset_token_counts()
        net(x, t, cache=cache)
        cached = dict(net.token_counts)
    n_cur = 16 * 16  # 32x32 latent, 2x2 patches
    register = 1 if single_block == "mmdim" else 0
    assert len(cached) == TINY.num_dual_blocks + TINY.num_single_blocks
    for name, n in cached.items():
        assert n == n_cur + (register if name.startswith("single") else 0), name
        assert n < uncached[name]
    lt, lv, frames = 7, 4 * 4 + 8 * 8 + 16 * 16 + 16 * 16, 4
    assert uncached["dual.0"] == lt + lv
    assert uncached["single.0"] == (2 * lt + lv + frames if single_block == "mmdim" else lt + lv)


def test_cached_forward_rejects_a_batch_of_another_size() -> None:
    net = make_net()
    with torch.no_grad():
        cache = net.prepare_context(text=make_text(), history=pyramid_history(), full_hw=FULL_HW)
        with pytest.raises(ValueError, match="batch"):
            net(torch.randn(1, C, 32, 32), torch.full((1,), 500.0), cache=cache)


def test_padded_text_content_does_not_reach_the_output() -> None:
    net = make_net()
    text, hist = make_text(), [torch.randn(2, C, 8, 8), torch.randn(2, C, 16, 16)]
    x, t = torch.randn(2, C, 16, 16), torch.full((2,), 500.0)
    noisy = TextEmbeddings(text.tokens.clone(), text.mask, text.pooled)
    noisy.tokens[~text.mask] = 100.0 * torch.randn(int((~text.mask).sum()), TEXT_DIM)
    with torch.no_grad():
        a = net(x, t, text=text, history=hist, full_hw=FULL_HW)
        b = net(x, t, text=noisy, history=hist, full_hw=FULL_HW)
        real = TextEmbeddings(text.tokens.clone(), text.mask, text.pooled)
        real.tokens[text.mask] = 100.0 * torch.randn(int(text.mask.sum()), TEXT_DIM)  # real tokens matter
        c = net(x, t, text=real, history=hist, full_hw=FULL_HW)
    assert rel_err(b, a) <= 1e-6
    assert rel_err(c[1], a[1]) > 1e-4
