"""Plain-PyTorch reference ops for the Mamba2 mixer: causal depthwise conv, SSD scan, gated RMSNorm.

Each function here has a twin in model/ssm_kernels.py with the same signature that calls the fused CUDA/Triton
kernels of causal-conv1d and mamba-ssm. Semantics follow those kernels exactly:

- causal_conv1d_ref            ~ causal_conv1d.causal_conv1d_fn
- ssd_chunked_ref              ~ mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined
- rmsnorm_gated_ref            ~ mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn (RMSNormGated)

ssd_sequential_ref is the naive per-timestep recurrence; it is slow and exists so tests can check the chunked
algorithm against the definition. All maths runs in fp32 (fp64 when given fp64 inputs) whatever the input
dtype; outputs come back in the input dtype, scan states in fp32 (fp64 for fp64 inputs), as the kernels do.
"""

# A, B, C, D are the SSM's names in the paper and in mamba_ssm's signatures, which these functions mirror.
# ruff: noqa: N803

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Literal["silu", "swish"] | None


def _compute_dtype(t: Tensor) -> torch.dtype:
    """fp64 stays fp64 (for tests); everything else is computed in fp32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def causal_conv1d_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    activation: Activation = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Depthwise causal conv: y[b, d, t] = sum_k weight[d, k] * xx[b, d, t + k] (+ bias), xx = [init ; x].

    x (B, D, L); weight (D, W); bias (D,); initial_states (B, D, W-1), zeros when None.
    Returns y (B, D, L) in x.dtype, and with return_final_states the last W-1 inputs of [init ; x]
    (B, D, W-1) in x.dtype: feeding them back as initial_states continues the sequence exactly.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    f = _compute_dtype(x)
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    if initial_states is None:
        initial_states = x.new_zeros(batch, dim, width - 1)
    xx = torch.cat([initial_states.to(x.dtype), x], dim=-1).to(f)  # (B, D, W-1+L)
    w = weight.to(f)
    y = sum(w[:, k, None] * xx[..., k : k + seqlen] for k in range(width))  # (B, D, L)
    assert isinstance(y, Tensor)
    if bias is not None:
        y = y + bias.to(f)[:, None]
    if activation is not None:
        y = F.silu(y)
    y = y.to(x.dtype)
    if not return_final_states:
        return y
    final_states = xx[..., xx.shape[-1] - (width - 1) :].to(x.dtype)  # (B, D, W-1)
    return y, final_states


def _discretize_dt(dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool, f: torch.dtype) -> Tensor:
    """dt (B, L, H) -> step sizes in dtype f: (+ dt_bias) then softplus, like the kernels' cumsum pass."""
    dt = dt.to(f)
    if dt_bias is not None:
        dt = dt + dt_bias.to(f)
    if dt_softplus:
        dt = F.softplus(dt)  # threshold 20 = the kernels' `dt <= 20 ? softplus(dt) : dt`
    return dt


def _heads_from_groups(t: Tensor, nheads: int) -> Tensor:
    """(B, L, G, N) -> (B, L, H, N): head h reads group h // (H // G), as in mamba_ssm."""
    return t.repeat_interleave(nheads // t.shape[2], dim=2)


def _skip_and_gate(y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D * x, then y * silu(z): the kernels apply the gate after the skip term."""
    f = y.dtype
    if D is not None:
        d = D.to(f)
        y = y + x.to(f) * (d[:, None] if d.dim() == 1 else d)  # D (H,) or (H, P)
    if z is not None:
        y = y * F.silu(z.to(f))
    return y


def _check_scan_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    batch, seqlen, nheads, _ = x.shape
    if dt.shape != (batch, seqlen, nheads) or A.shape != (nheads,):
        raise ValueError(f"dt {tuple(dt.shape)} / A {tuple(A.shape)} do not match x {tuple(x.shape)}")
    if B.shape != C.shape or B.shape[:2] != (batch, seqlen) or nheads % B.shape[2]:
        raise ValueError(f"B {tuple(B.shape)} / C {tuple(C.shape)} do not match x {tuple(x.shape)}")


def ssd_chunked_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD (Mamba2 paper, section 6): quadratic form inside a chunk, state passing between chunks.

    x (B, L, H, P); dt (B, L, H); A (H,) negative; B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P);
    dt_bias (H,); initial_states (B, H, P, N). Any L: the last chunk is zero-padded (padded steps have dt = 0,
    so they neither decay nor feed the state). Returns y (B, L, H, P) in x.dtype [, final state (B, H, P, N)
    in fp32].
    """
    _check_scan_shapes(x, dt, A, B, C)
    f = _compute_dtype(x)
    batch, seqlen, nheads, headdim = x.shape
    pad = (-seqlen) % chunk_size
    nchunks = (seqlen + pad) // chunk_size
    dt = _discretize_dt(dt, dt_bias, dt_softplus, f)

    def chunked(t: Tensor) -> Tensor:  # (B, L, ...) -> (B, c, Q, ...), zero-padded to c*Q
        t = F.pad(t.to(f), (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(batch, nchunks, chunk_size, *t.shape[2:])

    xc = chunked(x)  # (B, c, Q, H, P)
    dtc = chunked(dt)  # (B, c, Q, H)
    Bc = chunked(_heads_from_groups(B, nheads))  # (B, c, Q, H, N)
    Cc = chunked(_heads_from_groups(C, nheads))  # (B, c, Q, H, N)
    xdt = xc * dtc[..., None]  # (B, c, Q, H, P)
    dA_cs = torch.cumsum(dtc * A.to(f), dim=2)  # (B, c, Q, H): log-decay from chunk start

    # 1. Intra-chunk (diagonal blocks): y_i = sum_{j<=i} (C_i . B_j) exp(cs_i - cs_j) dt_j x_j.
    seg = dA_cs[:, :, :, None, :] - dA_cs[:, :, None, :, :]  # (B, c, Qi, Qj, H)
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(seg.masked_fill(~causal[:, :, None], float("-inf")))  # -inf before exp: no overflow
    scores = torch.einsum("bcihn,bcjhn->bcijh", Cc, Bc) * decay  # (B, c, Qi, Qj, H)
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, xdt)  # (B, c, Q, H, P)

    # 2. Each chunk's own contribution to the state at its end.
    to_end = torch.exp(dA_cs[:, :, -1:, :] - dA_cs)  # (B, c, Q, H)
    chunk_states = torch.einsum("bcqhn,bcqh,bcqhp->bchpn", Bc, to_end, xdt)  # (B, c, H, P, N)

    # 3. Pass states across chunks (sequential over the few chunks).
    state = x.new_zeros(batch, nheads, headdim, B.shape[-1], dtype=f)
    if initial_states is not None:
        state = initial_states.to(f)
    chunk_decay = torch.exp(dA_cs[:, :, -1, :])  # (B, c, H)
    entering = []
    for c in range(nchunks):
        entering.append(state)
        state = state * chunk_decay[:, c, :, None, None] + chunk_states[:, c]
    prev = (
        torch.stack(entering, dim=1) if entering else chunk_states
    )  # (B, c, H, P, N): state entering each chunk

    # 4. Off-diagonal blocks: the entering state read out through C, decayed to each position.
    y = y + torch.einsum("bcqhn,bchpn,bcqh->bcqhp", Cc, prev, torch.exp(dA_cs))
    y = y.reshape(batch, nchunks * chunk_size, nheads, headdim)[:, :seqlen]  # (B, L, H, P)
    y = _skip_and_gate(y, x, D, z).to(x.dtype)
    return (y, state) if return_final_states else y


def ssd_sequential_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrence by definition, one step at a time (chunk_size is ignored; kept for the signature):

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T ;  y_t = h_t C_t + D x_t ;  y_t *= silu(z_t).
    Slow; for tests (use fp64 inputs for a tight reference).
    """
    del chunk_size
    _check_scan_shapes(x, dt, A, B, C)
    f = _compute_dtype(x)
    batch, seqlen, nheads, headdim = x.shape
    dt = _discretize_dt(dt, dt_bias, dt_softplus, f)
    Bh = _heads_from_groups(B, nheads).to(f)  # (B, L, H, N)
    Ch = _heads_from_groups(C, nheads).to(f)  # (B, L, H, N)
    xf = x.to(f)
    h = x.new_zeros(batch, nheads, headdim, B.shape[-1], dtype=f)
    if initial_states is not None:
        h = initial_states.to(f)
    ys = []
    for t in range(seqlen):
        decay = torch.exp(dt[:, t] * A.to(f))  # (B, H)
        inp = (dt[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]  # (B, H, P, N)
        h = h * decay[..., None, None] + inp
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else xf.new_zeros(x.shape)  # (B, L, H, P)
    y = _skip_and_gate(y, x, D, z).to(x.dtype)
    return (y, h) if return_final_states else y


def rmsnorm_gated_ref(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    eps: float = 1e-5,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """RMSNorm over groups of group_size channels (None: all of them), gated by silu(z).

    norm_before_gate=False (Mamba2's choice): norm(x * silu(z)) * weight; True: norm(x) * weight * silu(z).
    x, z (..., N); weight (N,). Computed in fp32, returned in x.dtype.
    """
    f = _compute_dtype(x)
    n = x.shape[-1]
    group_size = n if group_size is None else group_size
    if n % group_size:
        raise ValueError(f"group_size {group_size} does not divide the channel count {n}")
    xf = x.to(f)
    gate = F.silu(z.to(f)) if z is not None else None
    if gate is not None and not norm_before_gate:
        xf = xf * gate
    xg = xf.reshape(*x.shape[:-1], n // group_size, group_size)  # (..., G, N/G)
    xg = xg * torch.rsqrt(xg.square().mean(dim=-1, keepdim=True) + eps)
    out = xg.reshape(x.shape) * weight.to(f)  # (..., N)
    if gate is not None and norm_before_gate:
        out = out * gate
    return out.to(x.dtype)
