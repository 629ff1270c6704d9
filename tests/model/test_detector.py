"""The analytic detector reads the world generator's own clips back, and refuses noise and empty frames."""

from __future__ import annotations

import numpy as np
import torch

from model.detector import detect
from model.train.world import ClipSpec, random_specs, render_clips


def _frames(video: torch.Tensor) -> np.ndarray:
    return ((video.permute(0, 2, 3, 4, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()  # (B, F, H, W, 3)


def test_detector_reads_ground_truth_clips() -> None:
    g = torch.Generator().manual_seed(11)
    specs = random_specs(60, g)
    clips = _frames(render_clips(specs, g))
    wrong = [
        (s, detect(f))
        for s, f in zip(specs, clips, strict=True)
        if not all(detect(f).matches(s.color, s.shape, s.motion).values())
    ]
    assert not wrong


def test_detector_covers_every_attribute_value() -> None:
    g = torch.Generator().manual_seed(12)
    specs = [
        ClipSpec(c, s, m, b)
        for c, s, m, b in [
            ("orange", "triangle", "grow", "black"),
            ("cyan", "circle", "shrink", "dark blue"),
            ("white", "square", "up", "gray"),
            ("green", "circle", "still", "dark green"),
            ("magenta", "triangle", "down", "dark green"),
        ]
    ]
    for spec, frames in zip(specs, _frames(render_clips(specs, g)), strict=True):
        assert detect(frames).matches(spec.color, spec.shape, spec.motion) == {
            "color": True,
            "shape": True,
            "motion": True,
        }


def test_detector_rejects_noise_and_blank_frames() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (17, 128, 128, 3), dtype=np.uint8)
    blank = np.full((17, 128, 128, 3), 40, dtype=np.uint8)
    for frames in (noise, blank):
        det = detect(frames)
        assert (det.color, det.shape, det.motion) == (None, None, None)
