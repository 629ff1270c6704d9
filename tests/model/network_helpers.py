"""A tiny M4VNetwork and its inputs, shared by the network tests (tests only)."""

from __future__ import annotations

import torch

from model.config import PRESETS, NetworkConfig
from model.network import M4VNetwork
from model.text_encoder import TextEmbeddings

TINY = PRESETS["tiny"].network
C, TEXT_DIM, POOLED_DIM, FULL_HW = 8, 384, 384, (32, 32)


def make_net(cfg: NetworkConfig = TINY, seed: int = 0) -> M4VNetwork:
    """Tiny fp32 network; the temporal branch's zero-init projection is randomised so it is exercised."""
    torch.manual_seed(seed)
    net = M4VNetwork(cfg, latent_channels=C, text_dim=TEXT_DIM, pooled_dim=POOLED_DIM).eval()
    for name, p in net.named_parameters():
        if "temporal.proj" in name:
            torch.nn.init.normal_(p, std=0.05)
    return net


def make_text(batch: int = 2, length: int = 7) -> TextEmbeddings:
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[-1, length // 2 :] = False  # the uncond row is padded
    return TextEmbeddings(torch.randn(batch, length, TEXT_DIM), mask, torch.randn(batch, POOLED_DIM))
