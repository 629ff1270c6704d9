"""Temporal causality of the whole network: what a frame's outputs may depend on.

"causal" mode: nothing before the current frame depends on it; in the MM-DiT blocks and the attention
baseline a frame never depends on later frames. The MM-DiM re-composition averages the two text copies, and
the second copy comes after the history frames, so with MM-DiM blocks the text (and,
one block later, every frame) does depend on the history: strict causality among history frames holds through
the MM-DiT blocks and the first MM-DiM block only. The tests pin down exactly that.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import PRESETS
from model.network import M4VNetwork
from tests.model.network_helpers import FULL_HW, C, make_net, make_text

TINY = PRESETS["tiny"].network


def history() -> list[torch.Tensor]:
    return [torch.randn(2, C, 8, 8), torch.randn(2, C, 8, 8), torch.randn(2, C, 16, 16)]


def frame_outputs(net: M4VNetwork, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    torch.manual_seed(1)
    text = make_text()
    with torch.no_grad():
        return net.forward_all(
            frames[-1], torch.full((2,), 600.0), text=text, history=frames[:-1], full_hw=FULL_HW
        )


def changed(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[bool]:
    """Bitwise: a frame that does not depend on the perturbed one runs the very same ops on the same values
    (masked keys add exact zeros), and a real dependence can be tiny (the text-mean path is ~1e-6)."""
    return [not torch.equal(x, y) for x, y in zip(a, b, strict=True)]


def perturbed(frames: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    out = list(frames)
    out[k] = frames[k] + torch.randn_like(frames[k])
    return out


@pytest.mark.parametrize("single_block", ["mmdim", "attention"])
def test_the_current_frame_does_not_reach_any_earlier_frame(single_block: str) -> None:
    net = make_net(dataclasses.replace(TINY, single_block=single_block))
    frames = [*history(), torch.randn(2, C, 16, 16)]
    base = frame_outputs(net, frames)
    assert changed(base, frame_outputs(net, perturbed(frames, 3))) == [False, False, False, True]


def test_a_history_frame_never_reaches_earlier_frames_with_attention_blocks() -> None:
    net = make_net(dataclasses.replace(TINY, single_block="attention"))
    frames = [*history(), torch.randn(2, C, 16, 16)]
    base = frame_outputs(net, frames)
    assert changed(base, frame_outputs(net, perturbed(frames, 1))) == [False, True, True, True]


def test_a_history_frame_reaches_earlier_frames_only_through_the_mmdim_text_mean() -> None:
    frames = [*history(), torch.randn(2, C, 16, 16)]
    strict = make_net(dataclasses.replace(TINY, num_single_blocks=1))  # MM-DiT blocks + one MM-DiM block
    base = frame_outputs(strict, frames)
    assert changed(base, frame_outputs(strict, perturbed(frames, 1))) == [False, True, True, True]
    full = make_net()  # the second MM-DiM block reads text that averaged in the history
    base = frame_outputs(full, frames)
    assert changed(base, frame_outputs(full, perturbed(frames, 1))) == [True, True, True, True]


def test_paper_mode_is_not_causal() -> None:
    net = make_net(dataclasses.replace(TINY, context_mode="paper"))
    frames = [*history(), torch.randn(2, C, 16, 16)]
    base = frame_outputs(net, frames)
    assert changed(base, frame_outputs(net, perturbed(frames, 3))) == [True, True, True, True]
