"""Every attention backend computes the reference ("sdpa_mask") function: uncached, cached, paper mode."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import PRESETS, NetworkConfig
from model.joint_attention import JointLayout, SplitAttention, row_groups
from model.network import M4VNetwork
from model.runtime import RuntimeOptions
from model.text_encoder import TextEmbeddings

TINY = PRESETS["tiny"].network
C, TEXT_DIM, FULL_HW = 8, 384, (32, 32)
BACKENDS = ["flex", "sdpa_split"]


def nets(cfg: NetworkConfig, backend: str) -> tuple[M4VNetwork, M4VNetwork]:
    """(reference, candidate): identical random weights, temporal projection randomised."""
    torch.manual_seed(0)
    ref = M4VNetwork(cfg, latent_channels=C, text_dim=TEXT_DIM, pooled_dim=TEXT_DIM).eval()
    for name, p in ref.named_parameters():
        if "temporal.proj" in name:
            torch.nn.init.normal_(p, std=0.05)
    opts = RuntimeOptions(attention_backend=backend)  # type: ignore[arg-type]
    new = M4VNetwork(cfg, latent_channels=C, text_dim=TEXT_DIM, pooled_dim=TEXT_DIM, runtime=opts).eval()
    new.load_state_dict(ref.state_dict())
    return ref, new


def text(padded_rows: tuple[int, ...] = (1,), length: int = 9) -> TextEmbeddings:
    mask = torch.ones(2, length, dtype=torch.bool)
    for i, r in enumerate(padded_rows):
        mask[r, length // 2 + i :] = False
    tokens = torch.randn(2, length, TEXT_DIM)
    tokens[~mask] = 50.0 * torch.randn(int((~mask).sum()), TEXT_DIM)  # padding must not leak
    return TextEmbeddings(tokens, mask, torch.randn(2, TEXT_DIM))


def history(frames: int) -> list[torch.Tensor]:
    sizes = ([8] * frames + [16, 32])[-frames:] if frames else []
    return [torch.randn(2, C, s, s) for s in sizes]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("single_block", ["mmdim", "attention"])
@pytest.mark.parametrize("padded_rows", [(1,), ()])
def test_uncached_forward_equals_the_dense_mask_reference(
    backend: str, single_block: str, padded_rows: tuple[int, ...]
) -> None:
    ref, new = nets(dataclasses.replace(TINY, single_block=single_block), backend)
    tx, hist, x, t = text(padded_rows), history(3), torch.randn(2, C, 32, 32), torch.full((2,), 600.0)
    with torch.no_grad():
        want = ref.forward_all(x, t, text=tx, history=hist, full_hw=FULL_HW)
        got = new.forward_all(x, t, text=tx, history=hist, full_hw=FULL_HW)
    assert len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all() and rel(g, w) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("single_block", ["mmdim", "attention"])
@pytest.mark.parametrize(("n_hist", "size"), [(0, 8), (3, 32)])
def test_cached_steps_equal_the_dense_mask_reference(
    backend: str, single_block: str, n_hist: int, size: int
) -> None:
    ref, new = nets(dataclasses.replace(TINY, single_block=single_block), backend)
    tx, hist = text(), history(n_hist)
    with torch.no_grad():
        c_ref = ref.prepare_context(text=tx, history=hist, full_hw=FULL_HW)
        c_new = new.prepare_context(text=tx, history=hist, full_hw=FULL_HW)
        for step in range(3):  # later steps reuse the preallocated [context | current] buffers
            x, t = torch.randn(2, C, size, size), torch.full((2,), 900.0 - 100 * step)
            want = ref(x, t, cache=c_ref)
            got = new(x, t, cache=c_new)
            assert rel(got, want) < 1e-5
            uncached = new(x, t, text=tx, history=hist, full_hw=FULL_HW)
            assert rel(uncached, want) < 1e-4


def test_dense_mask_cached_steps_rewrite_only_the_current_frame_in_their_buffers() -> None:
    """sdpa_mask copies the context keys into [context | current] once per cache; every later step must see
    its own current-frame keys (a stale tail from the step before would fail the uncached comparison)."""
    net = nets(TINY, "sdpa_mask")[1]
    tx, hist = text(), history(3)
    with torch.no_grad():
        cache = net.prepare_context(text=tx, history=hist, full_hw=FULL_HW)
        for step in range(3):
            x, t = torch.randn(2, C, 32, 32), torch.full((2,), 900.0 - 100 * step)
            got = net(x, t, cache=cache)
            assert rel(got, net(x, t, text=tx, history=hist, full_hw=FULL_HW)) < 1e-4
    assert cache.attention is not None and len(cache.attention.buffers) == len(net.double_blocks)


@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_mode_text_attending_to_video_matches_the_reference(backend: str) -> None:
    ref, new = nets(dataclasses.replace(TINY, context_mode="paper", single_block="attention"), backend)
    tx, hist, x, t = text(), history(2), torch.randn(2, C, 32, 32), torch.full((2,), 300.0)
    with torch.no_grad():
        want = ref(x, t, text=tx, history=hist, full_hw=FULL_HW)
        got = new(x, t, text=tx, history=hist, full_hw=FULL_HW)
    assert rel(got, want) < 1e-5


def test_split_attention_groups_rows_by_padding_and_packs_only_valid_text() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    groups = row_groups(mask)
    assert [g.rows.tolist() if g.rows is not None else None for g in groups] == [[0, 2], [1]]
    assert [g.text_idx.tolist() for g in groups] == [[0, 1], [0, 1, 2]]
    same = row_groups(torch.ones(2, 4, dtype=torch.bool))
    assert len(same) == 1 and same[0].rows is None  # one group: no gather at all
    split = SplitAttention(JointLayout(mask, (3, 5), causal=True))
    assert split.frame_bounds == [(0, 3), (3, 8)]


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="attention_backend"):
        RuntimeOptions(attention_backend="dense")  # type: ignore[arg-type]


def test_pyramidflow_mode_flex_matches_the_reference_and_split_refuses() -> None:
    cfg = dataclasses.replace(TINY, single_block="attention", context_mode="pyramidflow")
    ref, new = nets(cfg, "flex")
    tx, hist, x, t = text(), history(2), torch.randn(2, C, 16, 16), torch.full((2,), 600.0)
    with torch.no_grad():
        want = ref(x, t, text=tx, history=hist, full_hw=FULL_HW)
        assert rel(new(x, t, text=tx, history=hist, full_hw=FULL_HW), want) < 1e-5
    _, split = nets(cfg, "sdpa_split")
    with pytest.raises(ValueError, match="sdpa_split.*pyramidflow"):
        split(x, t, text=tx, history=hist, full_hw=FULL_HW)
