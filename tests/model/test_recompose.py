"""Token re-composition for the MM-DiM scan: exact inverse, the spec's layouts, padding placement."""

from __future__ import annotations

import pytest
import torch

from model.recompose import build_recomposition, inverse_recompose, recompose

FRAMES = [4, 16, 16]  # tokens per frame: 2x2, 4x4, 4x4 grids, oldest first


def text_mask() -> torch.Tensor:
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False  # trailing padding
    mask[2, [0, 2]] = False  # padding anywhere must also work
    return mask


@pytest.mark.parametrize("mode", ["paper", "causal"])
@pytest.mark.parametrize("has_current", [True, False])
def test_inverse_of_recompose_is_the_identity(mode: str, has_current: bool) -> None:
    mask = text_mask()
    x = torch.randn(3, 5 + sum(FRAMES), 8)
    registers = torch.randn(len(FRAMES), 8)
    r = build_recomposition(mask, FRAMES, mode, has_current)  # type: ignore[arg-type]
    y = recompose(x, registers, r)
    assert y.shape == (3, 2 * 5 + sum(FRAMES) + len(FRAMES), 8) == (3, r.length, 8)
    assert torch.equal(inverse_recompose(y, r), x)


def layout(mode: str, has_current: bool = True, frames: list[int] = FRAMES) -> list[str]:
    """Symbolic scan order of row 1: t<i> text token i, r<f> register of frame f, f<f> a frame-f token."""
    mask = text_mask()
    names = [f"t{i}" for i in range(5)] + [f"f{f}" for f, n in enumerate(frames) for _ in range(n)]
    names += [f"r{f}" for f in range(len(frames))]
    r = build_recomposition(mask, frames, mode, has_current)  # type: ignore[arg-type]
    seq = [names[i] for i in r.gather[1].tolist()]
    out, prev = [], None
    for n in seq:  # collapse runs of one frame's tokens
        if not (n.startswith("f") and n == prev):
            out.append(n)
        prev = n
    return out


def test_paper_layout_puts_both_text_copies_around_all_frames_with_padding_outside() -> None:
    text1 = ["t3", "t4", "t0", "t1", "t2"]  # padding (t3, t4) moved to the front
    text2 = ["t0", "t1", "t2", "t3", "t4"]  # ... and to the end
    assert layout("paper") == [*text1, "r0", "f0", "r1", "f1", "r2", "f2", *text2]


def test_causal_layout_puts_the_second_text_copy_just_before_the_current_frame() -> None:
    text1, text2 = ["t3", "t4", "t0", "t1", "t2"], ["t0", "t1", "t2", "t3", "t4"]
    assert layout("causal") == [*text1, "r0", "f0", "r1", "f1", *text2, "r2", "f2"]
    # The context pass (no current frame) is a prefix of the full causal scan: what the cache relies on.
    ctx = layout("causal", has_current=False, frames=FRAMES[:-1])
    assert len(ctx) == 2 * 5 + 4
    assert ctx == layout("causal")[: len(ctx)]


def test_video_tokens_keep_raster_order_inside_each_frame() -> None:
    r = build_recomposition(text_mask(), FRAMES, "causal", True)
    src = r.gather[0, r.video]  # source index of every video slot, in scan order
    assert torch.equal(src, torch.arange(5, 5 + sum(FRAMES)))
