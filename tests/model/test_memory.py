"""model/memory.py: the analytic parameter counts against the real modules (on the meta device), and the
peak estimate's monotonic shape."""

from __future__ import annotations

import pytest
import torch

from model.config import get_preset
from model.memory import estimate_peak_memory, network_params, vae_decoder_params
from model.network import M4VNetwork
from model.vae import CausalVAE


@pytest.mark.parametrize("preset", ["tiny", "m4v-768p", "attn-768p"])
def test_parameter_counts_match_the_modules_within_5_percent(preset: str) -> None:
    cfg = get_preset(preset)
    net = M4VNetwork(
        cfg.network,
        latent_channels=cfg.vae.latent_channels,
        text_dim=cfg.text.token_dim,
        pooled_dim=cfg.text.pooled_dim,
        scan_backend="ref",
        device="meta",
        dtype=torch.float32,
    )
    vae = CausalVAE(cfg.vae, device="meta", dtype=torch.float32)
    real_net = sum(p.numel() for p in net.parameters())
    real_dec = sum(p.numel() for n, p in vae.named_parameters() if n.startswith("decoder."))
    est_net = network_params(cfg.network, cfg.vae.latent_channels, cfg.text.token_dim, cfg.text.pooled_dim)
    assert est_net == pytest.approx(real_net, rel=0.05)
    assert vae_decoder_params(cfg.vae) == pytest.approx(real_dec, rel=0.05)


def test_peak_memory_grows_with_frames_and_resolution_and_fits_an_80gb_card_at_768p() -> None:
    cfg = get_preset("m4v-768p")
    small = estimate_peak_memory(cfg, width=640, height=384, num_frames=121).total
    short = estimate_peak_memory(cfg, width=1280, height=768, num_frames=121).total
    long = estimate_peak_memory(cfg, width=1280, height=768, num_frames=241).total
    assert small < short < long < 80 * 2**30
    uncached = estimate_peak_memory(cfg, width=1280, height=768, num_frames=241, cached=False)
    assert uncached.context_cache == 0 and uncached.activations > 0
