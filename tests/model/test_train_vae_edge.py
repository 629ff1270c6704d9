"""The VAE's edge term weighs the shape and a band around it (issue 13): the shipped VAE rounds triangle tips
and adds a halo, so its triangles read as circles; under a plain mean those ~1% of pixels barely count.
Also the per-shape fill statistics that bench/tiny_eval.py reports for the VAE round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from model.config import get_preset
from model.detector import detect, fill_ratio
from model.train.run import build_models
from model.train.train_vae import VAETrainConfig, edge_loss, foreground_weights, vae_loss
from model.train.world import ClipSpec, render_clips

CPU = torch.device("cpu")


def _triangle(seed: int = 0) -> torch.Tensor:
    spec = ClipSpec("green", "triangle", "still", "black")
    return render_clips([spec], torch.Generator().manual_seed(seed), frames=2, size=128)  # (1, 3, 2, H, W)


def _mask(video: torch.Tensor) -> torch.Tensor:  # (B, 1, F, H, W) bool: the shape's pixels
    return (video - video[..., :1, :1]).abs().amax(dim=1, keepdim=True) > 0.1


def _dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    k = 2 * px + 1
    return F.max_pool3d(mask.float(), (1, k, k), stride=1, padding=(0, px, px)) > 0


def _rounded(video: torch.Tensor, tip_rows: int = 8, halo_px: int = 2) -> torch.Tensor:
    """What the shipped VAE does to a triangle: the apex cut off (its top tip_rows rows painted background)
    and a half-strength halo of halo_px pixels around what is left."""
    bg = video[..., :1, :1]
    mask = _mask(video)
    rows = mask.any(dim=-1, keepdim=True)  # (B, 1, F, H, 1)
    top = rows.float().argmax(dim=-2, keepdim=True)  # first shape row per frame
    y = torch.arange(video.shape[-2])[:, None]
    tip = mask & (y < top + tip_rows)
    cut = torch.where(tip, bg, video)
    kept = mask & ~tip
    halo = _dilate(kept, halo_px) & ~kept
    fg = (video * mask).sum(dim=(-2, -1), keepdim=True) / mask.sum(dim=(-2, -1), keepdim=True)  # shape colour
    return torch.where(halo, bg + 0.5 * (fg - bg), cut)


def _uint8(video: torch.Tensor) -> np.ndarray:  # (1, 3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8
    return ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def test_the_rounded_triangle_reads_as_a_circle_and_the_fill_says_why() -> None:
    video = _triangle()
    assert detect(_uint8(video)).shape == "triangle" and fill_ratio(_uint8(video)) < 0.55
    rec = _rounded(video)
    assert detect(_uint8(rec)).shape == "circle" and fill_ratio(_uint8(rec)) > 0.64


def test_weighted_edge_term_punishes_a_rounded_tip_and_halo_far_more_than_the_plain_mean() -> None:
    video = _triangle()
    rec = _rounded(video)
    plain = edge_loss(rec, video)
    weighted = edge_loss(rec, video, foreground_weights(video, 20.0, band_px=2))
    assert plain > 0
    assert weighted > 5.0 * plain, (weighted, plain)
    # the band counts the halo outside the shape: more than the shape's own pixels alone do
    assert weighted > edge_loss(rec, video, foreground_weights(video, 20.0, band_px=0))


def test_edge_weights_are_applied_not_a_rescaled_plain_mean() -> None:
    video = _triangle()
    w = foreground_weights(video, 20.0, band_px=2)
    # uniform weights are the plain mean exactly (the weight map is renormalised to mean 1)
    rec = _rounded(video)
    torch.testing.assert_close(edge_loss(rec, video, torch.ones_like(w)), edge_loss(rec, video))
    # the same blotch in the background, far from the shape, costs less than under the plain mean
    far = video.clone()
    far[..., 4:12, 4:12] += 0.5
    assert not _dilate(_mask(video), 2)[..., 4:12, 4:12].any()
    assert edge_loss(far, video, w) < 0.5 * edge_loss(far, video)
    # the band: shape pixels dilated by band_px get 1 + fg_weight against 1, mean 1 per frame
    band = _dilate(_mask(video), 2)
    torch.testing.assert_close(w.mean(dim=(2, 3, 4)), torch.ones(1, 1))
    assert torch.allclose(w[band] / w[~band].max(), torch.tensor(21.0))
    assert band.sum() > _mask(video).sum()


def test_vae_loss_uses_the_edge_knobs() -> None:
    cfg = dataclasses.replace(get_preset("tiny"), resolutions=((32, 32),), default_frames=5)
    _, vae = build_models(cfg, CPU, seed=0)
    spec = ClipSpec("red", "triangle", "still", "gray")
    video = render_clips([spec], torch.Generator().manual_seed(0), frames=5, size=32)
    losses = {}
    for name, tc in {
        "plain": VAETrainConfig(edge_fg_weight=0.0),
        "default": VAETrainConfig(),
        "no_band": VAETrainConfig(edge_band_px=0),
    }.items():
        with torch.no_grad():
            losses[name] = vae_loss(vae, video, tc, torch.Generator().manual_seed(1))
    # plain: the edge term is its plain mean; the others weigh it, and L1/L2 do not change with the edge knobs
    torch.testing.assert_close(losses["plain"]["edge"], losses["plain"]["edge_plain"])
    torch.testing.assert_close(losses["default"]["edge_plain"], losses["plain"]["edge"])
    assert not torch.isclose(losses["default"]["edge"], losses["plain"]["edge"])
    assert not torch.isclose(losses["default"]["edge"], losses["no_band"]["edge"])
    torch.testing.assert_close(losses["default"]["l1"], losses["plain"]["l1"])
    d = losses["default"]
    total = d["l1"] + d["l2"] + 1e-6 * d["kl"] * cfg.vae.latent_channels + 0.5 * d["edge"]
    torch.testing.assert_close(d["loss"], total)
    assert all(torch.isfinite(v) for v in d.values())


def test_shape_tally_reports_fill_and_confusion_per_shape() -> None:
    from bench.tiny_eval import ShapeTally

    shapes = ShapeTally()
    for seed in range(3):
        video = _triangle(seed)
        for v in (video, _rounded(video)):
            frames = _uint8(v)
            shapes.add(ClipSpec("green", "triangle", "still", "black"), frames, detect(frames))
    s = shapes.summary()
    assert list(s) == ["triangle"] and s["triangle"]["clips"] == 6
    assert s["triangle"]["read_as"] == {"circle": 3, "triangle": 3}
    fill = s["triangle"]["fill"]
    assert fill["min"] < 0.55 < 0.64 < fill["max"] and fill["min"] <= fill["median"] <= fill["max"]
