"""The procedural world: one shape of one colour on a plain background, moving in one of seven ways.

Clips are rendered in batches with torch (any device), as (B, 3, F, H, W) in [-1, 1], from a seeded
generator. Shapes have a 1-pixel anti-aliased edge (signed distance), and stay fully inside the frame, so the
detector (model/detector.py) can read colour, shape and motion back analytically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 0.85, 0.0),
    "blue": (0.1, 0.3, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "orange": (1.0, 0.5, 0.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "gray": (0.45, 0.45, 0.45),
    "dark blue": (0.0, 0.0, 0.3),
    "dark green": (0.0, 0.25, 0.0),
}
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "grow", "shrink", "still")


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows; the caption and the detector speak about exactly these four fields."""

    color: str
    shape: str
    motion: str
    background: str


@dataclass(frozen=True)
class Geometry:
    """Per-frame centre (x, y) and half-size r in pixels, each (B, F)."""

    cx: torch.Tensor
    cy: torch.Tensor
    r: torch.Tensor


def random_specs(n: int, generator: torch.Generator) -> list[ClipSpec]:
    """n specs drawn uniformly from the full colour x shape x motion x background product."""
    sizes = (len(COLORS), len(SHAPES), len(MOTIONS), len(BACKGROUNDS))
    idx = [torch.randint(0, s, (n,), generator=generator).tolist() for s in sizes]
    colors, backgrounds = list(COLORS), list(BACKGROUNDS)
    return [
        ClipSpec(colors[c], SHAPES[s], MOTIONS[m], backgrounds[b]) for c, s, m, b in zip(*idx, strict=True)
    ]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def sample_geometry(specs: list[ClipSpec], frames: int, size: int, g: torch.Generator) -> Geometry:
    """Trajectories: moves travel 36-60 px, grow/shrink span half-sizes ~9 to ~24, all inside the frame."""
    n = len(specs)
    s = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)[None]  # (1, F) clip time
    r0 = _uniform(n, 12.0, 19.0, g)[:, None]
    dist = _uniform(n, 36.0, 60.0, g)[:, None]
    small, big = _uniform(n, 8.0, 11.0, g)[:, None], _uniform(n, 22.0, 26.0, g)[:, None]
    u, w = _uniform(n, 0.0, 1.0, g)[:, None], _uniform(n, 0.0, 1.0, g)[:, None]
    cx, cy, r = [], [], []
    for i, spec in enumerate(specs):
        rad = {"grow": small[i] + (big[i] - small[i]) * s, "shrink": big[i] + (small[i] - big[i]) * s}.get(
            spec.motion, r0[i] + 0 * s
        )  # (1, F)
        m = rad.max().item() + 2.0  # margin so the shape never touches the border
        dx = {"left": -dist[i], "right": dist[i]}.get(spec.motion, 0 * dist[i])
        dy = {"up": -dist[i], "down": dist[i]}.get(spec.motion, 0 * dist[i])
        x0 = m + abs(dx.item()) * (dx.item() < 0) + u[i] * (size - 2 * m - abs(dx.item()))
        y0 = m + abs(dy.item()) * (dy.item() < 0) + w[i] * (size - 2 * m - abs(dy.item()))
        cx.append(x0 + dx * s)
        cy.append(y0 + dy * s)
        r.append(rad)
    return Geometry(torch.cat(cx).float(), torch.cat(cy).float(), torch.cat(r).float())


def _signed_distance(shape: str, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Distance (pixels, negative inside) from pixel offsets (px, py) to the shape of half-size r."""
    if shape == "circle":
        return torch.sqrt(px**2 + py**2) - r
    if shape == "square":
        return torch.maximum(px.abs(), py.abs()) - r
    # Isosceles triangle, apex up, base 2r wide at y = +r: fills half of its 2r x 2r bounding box.
    norm = 5.0**0.5
    side = (2.0 * px.abs() - py - r) / norm  # the two slanted edges through (0, -r) and (+-r, r)
    return torch.maximum(side, py - r)


def render(specs: list[ClipSpec], geom: Geometry, size: int, device: torch.device | str) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1]."""
    n, frames = geom.cx.shape
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    out = torch.empty(n, 3, frames, size, size, device=device)
    for i, spec in enumerate(specs):
        cx, cy, r = (t[i].to(device)[:, None, None] for t in (geom.cx, geom.cy, geom.r))  # (F, 1, 1)
        px, py = coords[None, None, :] - cx, coords[None, :, None] - cy  # (F, 1, W), (F, H, 1)
        cover = (0.5 - _signed_distance(spec.shape, px, py, r)).clamp(0.0, 1.0)  # (F, H, W)
        fg = torch.tensor(COLORS[spec.color], device=device)[:, None, None, None]  # (3, 1, 1, 1)
        bg = torch.tensor(BACKGROUNDS[spec.background], device=device)[:, None, None, None]
        out[i] = bg + (fg - bg) * cover[None]  # (3, F, H, W)
    return out * 2.0 - 1.0


def render_clips(
    specs: list[ClipSpec],
    generator: torch.Generator,
    *,
    frames: int = 17,
    size: int = 128,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Specs -> clips (B, 3, frames, size, size) in [-1, 1]; geometry from the (CPU) generator."""
    return render(specs, sample_geometry(specs, frames, size, generator), size, device)
