"""The Mamba2 mixer with its sequence split over ranks: each rank holds a contiguous run of tokens.

The SSD recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T is linear in the state, so a rank's output is
its local scan (from a zero state) plus the incoming state's contribution read out through C:

    y_t = y_t^local + C_t . (exp(cs_t) h_in),    cs_t = sum_{s <= t} dt_s A   (from the rank's first token)
    h_out = exp(cs_last) h_in + h^local

Every rank runs in_proj, the conv and its local scan at the same time; only two small tensors travel from
rank to rank: the causal conv's tail (last d_conv-1 inputs) before the conv, and the scan state after the
local scan (h_out above, a few multiply-adds per rank). The conv needs the tail of the previous rank's
inputs, never its outputs, so it is exact as well. The skip term D x and the gated norm are per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor

from model.mamba2 import Mamba2, SSMState, _scan_ops
from model.parallel.relay import Relay, SequentialRelay


@dataclass
class LocalScan:
    """A rank's scan from a zero state, and what it needs to take in the state of the ranks before it."""

    y: Tensor  # (B, L, H, P) output from a zero state (skip term included), activation dtype
    final: Tensor  # (B, H, P, N) state after the rank's tokens from a zero state, fp32
    log_decay: Tensor  # (B, L, H) cs_t: cumulative dt*A from the rank's first token, inclusive, fp32
    c: Tensor  # (B, L, H, N) the read-out C, one per head


def conv_tail_after(tail: Tensor, xbc: Tensor) -> Tensor:
    """The last d_conv-1 conv inputs of [tail ; xbc]: tail (B, conv_dim, W-1), xbc (B, L, conv_dim)."""
    width = tail.shape[-1]
    joined = torch.cat([tail, xbc.transpose(1, 2).to(tail.dtype)], dim=-1)  # (B, conv_dim, W-1+L)
    return joined[..., joined.shape[-1] - width :]


def log_decay(m: Mamba2, dt: Tensor) -> Tensor:
    """dt (B, L, H) raw -> cs (B, L, H) = cumsum(softplus(dt + dt_bias) * A) in fp32, as the scan does."""
    step = F.softplus(dt.float() + m.dt_bias.float())  # (B, L, H)
    return torch.cumsum(step * -torch.exp(m.A_log.float()), dim=1)


def carry(h_in: Tensor, local: LocalScan) -> Tensor:
    """State after the rank's tokens when it starts from h_in (B, H, P, N)."""
    return torch.exp(local.log_decay[:, -1])[..., None, None] * h_in + local.final


def add_carried(local: LocalScan, h_in: Tensor) -> Tensor:
    """y (B, L, H, P) of the rank's tokens when the scan starts from h_in instead of zeros."""
    readout = torch.einsum("blhn,bhpn->blhp", local.c.float(), h_in.float())  # (B, L, H, P)
    y = local.y.float() + readout * torch.exp(local.log_decay)[..., None]
    return y.to(local.y.dtype)


def mixer_forward_shard(
    m: Mamba2, x: Tensor, relay: Relay, state: SSMState | None = None
) -> tuple[Tensor, SSMState]:
    """This rank's part of m(x_all, state): x (B, L_r, D) its tokens -> (B, L_r, D) and the state after
    them (on the last rank, the state after the whole sequence). `state`: the state before the first rank's
    tokens (read on the first rank only; give the same on every rank, or None for zeros)."""
    if x.shape[1] == 0:
        raise ValueError("every rank needs at least one token of the split sequence")
    ops = _scan_ops(m.backend_for(x.device))
    start = state if state is not None else m.initial_state(x.shape[0], x.device, x.dtype)
    z, xbc, dt = m._split_in_proj(m.in_proj(x))
    conv_in, conv_out = relay.relay(start.conv, lambda tail: conv_tail_after(tail, xbc))
    xbc, _ = m._conv(ops, xbc, SSMState(conv=conv_in, ssm=start.ssm), return_state=False)  # (B, L, conv_dim)
    xs, b, c = m._split_xbc(xbc)
    y, final = m._scan(ops, xs, dt, b, c, None, return_state=True)  # from zeros: (B, L, H, P), (B, H, P, N)
    assert final is not None
    heads = repeat(c, "b l g n -> b l (g r) n", r=m.nheads // c.shape[2])  # (B, L, H, N)
    local = LocalScan(y=y, final=final, log_decay=log_decay(m, dt), c=heads)
    h_in, h_out = relay.relay(start.ssm, lambda h: carry(h, local))
    y = add_carried(local, h_in)
    y = ops.rmsnorm_gated(
        y.flatten(2), m.norm.weight, z, m.norm.eps, m.norm.group_size, norm_before_gate=False
    )  # (B, L, d_inner)
    return m.out_proj(y), SSMState(conv=conv_out, ssm=h_out)


def split_scan(
    m: Mamba2, x: Tensor, lengths: list[int], state: SSMState | None = None
) -> tuple[Tensor, SSMState]:
    """The split over len(lengths) ranks, run in one process: x (B, sum(lengths), D) -> the concatenated
    rank outputs and the state after the last rank. Equals m(x, state, return_state=True) up to rounding."""
    relay = SequentialRelay(len(lengths))
    outs: list[Tensor] = []
    for seg in x.split(lengths, dim=1):
        y, end = mixer_forward_shard(m, seg, relay, state)
        outs.append(y)
        relay.next_rank()
    return torch.cat(outs, dim=1), end
