"""ssm_ref: the chunked SSD scan against the per-step recurrence, the causal conv and gated RMSNorm against
torch's own ops. fp64 where the claim is 'same maths', so tolerances can be tight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from model.ssm_ref import causal_conv1d_ref, rmsnorm_gated_ref, ssd_chunked_ref, ssd_sequential_ref

F64 = torch.float64


def _rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _scan_inputs(
    seqlen: int, dtype: torch.dtype = F64, batch: int = 2, nheads: int = 4, headdim: int = 8, ngroups: int = 2
) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seqlen)
    n = 16

    def rnd(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=F64).to(dtype)

    return {
        "x": rnd(batch, seqlen, nheads, headdim),
        "dt": rnd(batch, seqlen, nheads) - 1.0,
        "A": -(torch.rand(nheads, generator=g, dtype=F64) * 2 + 0.2),
        "B": rnd(batch, seqlen, ngroups, n),
        "C": rnd(batch, seqlen, ngroups, n),
    }


def _options(inp: dict[str, Tensor], kind: str) -> dict[str, object]:
    if kind == "bare":
        return {}
    batch, seqlen, nheads, headdim = inp["x"].shape
    g = torch.Generator().manual_seed(7)
    opts: dict[str, object] = {
        "D": torch.randn(nheads, headdim if kind == "full_D_hp" else 1, generator=g, dtype=F64).squeeze(-1),
        "z": torch.randn(batch, seqlen, nheads, headdim, generator=g, dtype=F64),
        "dt_bias": torch.randn(nheads, generator=g, dtype=F64),
        "dt_softplus": True,
        "initial_states": torch.randn(batch, nheads, headdim, inp["B"].shape[-1], generator=g, dtype=F64),
        "return_final_states": True,
    }
    return opts


@pytest.mark.parametrize("kind", ["bare", "full", "full_D_hp"])
@pytest.mark.parametrize(("seqlen", "chunk"), [(1, 32), (37, 32), (64, 64), (130, 64), (130, 32)])
def test_chunked_scan_equals_sequential_recurrence_fp64(seqlen: int, chunk: int, kind: str) -> None:
    inp = _scan_inputs(seqlen)
    if kind == "bare":
        inp["dt"] = F.softplus(inp["dt"])  # without dt_softplus the steps must already be positive
    opts = _options(inp, kind)
    got = ssd_chunked_ref(**inp, chunk_size=chunk, **opts)  # type: ignore[arg-type]
    want = ssd_sequential_ref(**inp, chunk_size=chunk, **opts)  # type: ignore[arg-type]
    if kind == "bare":
        assert isinstance(got, Tensor) and isinstance(want, Tensor)
        assert _rel_err(got, want) <= 1e-6
        return
    (y, state), (y_want, state_want) = got, want
    assert y.shape == inp["x"].shape and state.shape == opts["initial_states"].shape  # type: ignore[attr-defined]
    assert _rel_err(y, y_want) <= 1e-6, _rel_err(y, y_want)
    assert _rel_err(state, state_want) <= 1e-6, _rel_err(state, state_want)


def test_sequential_recurrence_matches_hand_computed_single_head() -> None:
    # One head, P = N = 1: h_t = exp(dt A) h + dt x B; y = C h + D x, by hand for two steps.
    x = torch.tensor([1.0, 2.0], dtype=F64).view(1, 2, 1, 1)
    dt = torch.tensor([0.5, 0.25], dtype=F64).view(1, 2, 1)
    A = torch.tensor([-1.0], dtype=F64)
    B = torch.tensor([2.0, 3.0], dtype=F64).view(1, 2, 1, 1)
    C = torch.tensor([1.0, -1.0], dtype=F64).view(1, 2, 1, 1)
    D = torch.tensor([0.5], dtype=F64)
    h1 = 0.5 * 1.0 * 2.0
    h2 = torch.exp(torch.tensor(-0.25, dtype=F64)).item() * h1 + 0.25 * 2.0 * 3.0
    want = torch.tensor([1.0 * h1 + 0.5 * 1.0, -1.0 * h2 + 0.5 * 2.0], dtype=F64)
    for scan in (ssd_sequential_ref, ssd_chunked_ref):
        y = scan(x, dt, A, B, C, 1 if scan is ssd_chunked_ref else 4, D=D)
        assert isinstance(y, Tensor)
        torch.testing.assert_close(y.flatten(), want)


def test_chunked_scan_resumes_from_its_final_state() -> None:
    inp = _scan_inputs(100)
    full, full_state = ssd_chunked_ref(**inp, chunk_size=32, return_final_states=True)  # type: ignore[misc]
    first = {k: v[:, :45] if v.dim() > 1 else v for k, v in inp.items()}
    rest = {k: v[:, 45:] if v.dim() > 1 else v for k, v in inp.items()}
    y1, s1 = ssd_chunked_ref(**first, chunk_size=32, return_final_states=True)  # type: ignore[misc]
    y2, s2 = ssd_chunked_ref(**rest, chunk_size=32, initial_states=s1, return_final_states=True)  # type: ignore[misc]
    assert _rel_err(torch.cat([y1, y2], dim=1), full) <= 1e-10
    assert _rel_err(s2, full_state) <= 1e-10


def test_chunked_scan_of_empty_sequence_keeps_the_initial_state() -> None:
    inp = _scan_inputs(0)
    h0 = torch.randn(2, 4, 8, 16, dtype=F64)
    y, state = ssd_chunked_ref(**inp, chunk_size=32, initial_states=h0, return_final_states=True)  # type: ignore[misc]
    assert y.shape == (2, 0, 4, 8)
    torch.testing.assert_close(state, h0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_scan_returns_input_dtype_and_fp32_state(dtype: torch.dtype) -> None:
    inp = _scan_inputs(50, dtype=dtype)
    inp["A"] = inp["A"].float()
    y, state = ssd_chunked_ref(**inp, chunk_size=16, dt_softplus=True, return_final_states=True)  # type: ignore[misc]
    assert y.dtype == dtype and state.dtype == torch.float32
    want = ssd_sequential_ref(**{k: v.double() for k, v in inp.items()}, chunk_size=16, dt_softplus=True)
    assert isinstance(want, Tensor)
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: only the output rounding
    assert _rel_err(y.double(), want) <= tol


def _conv_inputs(seqlen: int, width: int = 4, dim: int = 6, batch: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seqlen * 10 + width)
    return (
        torch.randn(batch, dim, seqlen, generator=g, dtype=F64),
        torch.randn(dim, width, generator=g, dtype=F64),
        torch.randn(dim, generator=g, dtype=F64),
    )


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize(("seqlen", "width"), [(1, 4), (2, 4), (17, 4), (9, 2), (5, 3)])
def test_causal_conv_equals_left_padded_conv1d(seqlen: int, width: int, activation: str | None) -> None:
    x, w, b = _conv_inputs(seqlen, width)
    want = F.conv1d(F.pad(x, (width - 1, 0)), w.unsqueeze(1), b, groups=w.shape[0])  # (B, D, L)
    if activation:
        want = F.silu(want)
    got = causal_conv1d_ref(x, w, b, activation=activation)  # type: ignore[arg-type]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("seqlen", [1, 2, 3, 17])
def test_causal_conv_with_initial_states_equals_conv_over_the_prefix(seqlen: int) -> None:
    x, w, b = _conv_inputs(seqlen)
    init = torch.randn(2, 6, 3, dtype=F64)
    full = torch.cat([init, x], dim=-1)  # (B, D, 3 + L)
    want = F.silu(F.conv1d(full, w.unsqueeze(1), b, groups=6))
    got, final = causal_conv1d_ref(x, w, b, init, return_final_states=True, activation="silu")  # type: ignore[misc]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(final, full[..., -3:])


def test_causal_conv_final_state_zero_pads_short_sequences() -> None:
    x, w, b = _conv_inputs(2)
    _, final = causal_conv1d_ref(x, w, b, return_final_states=True)  # type: ignore[misc]
    torch.testing.assert_close(final[..., 0], torch.zeros_like(final[..., 0]))
    torch.testing.assert_close(final[..., 1:], x)


def test_causal_conv_resumes_from_its_final_state() -> None:
    x, w, b = _conv_inputs(20)
    full = causal_conv1d_ref(x, w, b, activation="silu")
    pieces, state = [], None
    for lo, hi in [(0, 1), (1, 3), (3, 11), (11, 20)]:
        y, state = causal_conv1d_ref(x[..., lo:hi], w, b, state, return_final_states=True, activation="silu")  # type: ignore[misc]
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=-1), full)


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [None, 4])
def test_rmsnorm_gated_matches_torch_rms_norm(group_size: int | None, norm_before_gate: bool) -> None:
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(2, 5, 12, generator=g, dtype=F64), torch.randn(2, 5, 12, generator=g, dtype=F64)
    w = torch.randn(12, generator=g, dtype=F64)
    gs = group_size or 12
    inp = x if norm_before_gate else x * F.silu(z)
    normed = F.rms_norm(inp.view(2, 5, 12 // gs, gs), (gs,), eps=1e-5).view(2, 5, 12) * w
    want = normed * F.silu(z) if norm_before_gate else normed
    got = rmsnorm_gated_ref(x, w, z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)
    torch.testing.assert_close(got, want)


def test_rmsnorm_gated_without_gate_is_plain_rmsnorm_and_keeps_bf16() -> None:
    x = torch.randn(3, 16).bfloat16()
    w = torch.rand(16).bfloat16()
    got = rmsnorm_gated_ref(x, w)
    assert got.dtype == torch.bfloat16
    want = F.rms_norm(x.float(), (16,), eps=1e-5) * w.float()
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("scan", [ssd_chunked_ref, ssd_sequential_ref])
def test_z_gate_multiplies_the_skip_included_output_by_silu_z(scan: object) -> None:
    # mamba_chunk_scan_combined gates after the D skip: y = (C h + D x) * silu(z).
    inp = _scan_inputs(20)
    g = torch.Generator().manual_seed(1)
    D, z = torch.randn(4, generator=g, dtype=F64), torch.randn(2, 20, 4, 8, generator=g, dtype=F64)
    ungated = scan(**inp, chunk_size=8, D=D, dt_softplus=True)  # type: ignore[operator]
    gated = scan(**inp, chunk_size=8, D=D, z=z, dt_softplus=True)  # type: ignore[operator]
    torch.testing.assert_close(gated, ungated * z * torch.sigmoid(z))
