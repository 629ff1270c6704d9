"""Analytic prompt-adherence detector for clips of the procedural world (model/train/world.py).

Background = the median colour of the frame border; foreground = pixels far from it. Colour: hue of the
mean foreground colour (white by low saturation); shape: fill ratio of the foreground's bounding box
(triangle 1/2, circle pi/4, square 1); motion: the centroid track and the area trend. Anything that does not
look like one compact shape on a plain background (noise, an empty frame) is reported as undetected.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

HUES = {
    "red": 0.0,
    "orange": 30.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 225.0,
    "magenta": 300.0,
}
FG_THRESHOLD = 60.0  # max channel distance to the background (0-255) for a foreground pixel
MIN_AREA, MAX_AREA_FRACTION = 30, 0.35
MIN_SHIFT_PX, AREA_RATIO = 15.0, 1.6


@dataclass(frozen=True)
class Detection:
    """What the detector reads from a clip; None where it cannot tell."""

    color: str | None
    shape: str | None
    motion: str | None

    def matches(self, color: str, shape: str, motion: str) -> dict[str, bool]:
        return {"color": self.color == color, "shape": self.shape == shape, "motion": self.motion == motion}


@dataclass(frozen=True)
class FrameStats:
    area: float
    cx: float
    cy: float
    fill: float


def background(frames: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (3,) median colour of the 2-pixel border over all frames."""
    f = frames.astype(np.float32)
    border = np.concatenate(
        [
            f[:, :2].reshape(-1, 3),
            f[:, -2:].reshape(-1, 3),
            f[:, :, :2].reshape(-1, 3),
            f[:, :, -2:].reshape(-1, 3),
        ]
    )
    return np.median(border, axis=0)


def foreground(frames: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """(n, H, W) bool."""
    return np.abs(frames.astype(np.float32) - bg).max(axis=-1) > FG_THRESHOLD


def frame_stats(mask: np.ndarray) -> FrameStats | None:
    ys, xs = np.nonzero(mask)
    if ys.size < MIN_AREA or ys.size > MAX_AREA_FRACTION * mask.size:
        return None
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return FrameStats(area=float(ys.size), cx=float(xs.mean()), cy=float(ys.mean()), fill=ys.size / box)


def color_name(rgb: np.ndarray) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(rgb / 255.0).tolist())
    if s < 0.3 and v > 0.6:
        return "white"
    hue = h * 360.0
    return min(HUES, key=lambda n: min(abs(hue - HUES[n]), 360.0 - abs(hue - HUES[n])))


def shape_name(fill: float) -> str:
    if fill < 0.64:
        return "triangle"
    return "circle" if fill < 0.89 else "square"


def motion_name(stats: list[FrameStats]) -> str:
    first, last = stats[: max(1, len(stats) // 4)], stats[-max(1, len(stats) // 4) :]
    mean = lambda xs, k: float(np.mean([getattr(x, k) for x in xs]))  # noqa: E731
    ratio = mean(last, "area") / mean(first, "area")
    if ratio > AREA_RATIO:
        return "grow"
    if ratio < 1.0 / AREA_RATIO:
        return "shrink"
    dx, dy = mean(last, "cx") - mean(first, "cx"), mean(last, "cy") - mean(first, "cy")
    if max(abs(dx), abs(dy)) < MIN_SHIFT_PX:
        return "still"
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def fill_ratio(frames: np.ndarray) -> float | None:
    """frames (n, H, W, 3) uint8 -> the median bounding-box fill ratio that detect reads the shape from (over
    the frames where one shape is seen; None if none is), for per-shape statistics."""
    stats = [s for s in (frame_stats(m) for m in foreground(frames, background(frames))) if s is not None]
    return float(np.median([s.fill for s in stats])) if stats else None


def detect(frames: np.ndarray) -> Detection:
    """frames (n, H, W, 3) uint8 -> Detection; undetected fields are None."""
    bg = background(frames)
    masks = foreground(frames, bg)
    stats = [frame_stats(m) for m in masks]
    if sum(s is None for s in stats) > len(stats) // 4:
        return Detection(None, None, None)
    good = [s for s in stats if s is not None]
    fg_pixels = frames[masks].astype(np.float32)  # (N, 3)
    color = color_name(fg_pixels.mean(axis=0))
    shape = shape_name(float(np.median([s.fill for s in good])))
    return Detection(color, shape, motion_name(good))
