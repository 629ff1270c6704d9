"""Mamba2 token mixer (SSD), the core of the MM-DiM block.

in_proj -> [z | xBC | dt];  xBC -> causal depthwise conv -> SiLU -> [x | B | C];
SSD scan over (x, dt, A, B, C) with skip D;  gated RMSNorm(y, z);  out_proj.

Parameter names and shapes are those of mamba_ssm.modules.mamba2.Mamba2 (in_proj, conv1d, dt_bias, A_log,
D, norm.weight, out_proj; no projection biases), so one state_dict serves both scan backends and mamba_ssm.

dtype policy: projection, conv and norm weights take the module dtype (bf16 on GPU). A_log, dt_bias and D are
fp32 parameters even when the module is built in bf16 (they set decay rates, which bf16's 8-bit mantissa would
round visibly). Build the module with dtype= rather than calling .to(bfloat16) on it, which would round
them; forward() reads them through .float() either way.
The scan runs in fp32 and its state is fp32; the conv tail is kept in the activation dtype, since it is just
the last d_conv-1 inputs.

Context caching: forward(x, state, return_state=True) returns the state after x; running [a] then [b] from
that state equals running [a ; b] in one pass (up to float rounding). The sampler runs the context once and
then only the current frame from the saved state at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from model import ssm_kernels, ssm_ref
from model.config import MambaConfig
from model.ssm_kernels import resolve_backend


@dataclass
class SSMState:
    """Mamba2 recurrent state after a sequence; batch-first like the activations.

    conv: (B, conv_dim, d_conv - 1) the last inputs of the causal conv, in the activation dtype.
    ssm:  (B, nheads, headdim, d_state) the scan state, fp32.
    """

    conv: Tensor
    ssm: Tensor


class _ScanOps(NamedTuple):
    """The three ops of one backend; ssm_ref's and ssm_kernels' functions share signatures."""

    causal_conv1d: Callable[..., Any]
    ssd_chunked: Callable[..., Any]
    rmsnorm_gated: Callable[..., Any]


def _scan_ops(backend: str) -> _ScanOps:
    if backend == "kernel":
        return _ScanOps(ssm_kernels.causal_conv1d, ssm_kernels.ssd_chunked, ssm_kernels.rmsnorm_gated)
    if backend == "triton":
        return _ScanOps(ssm_ref.causal_conv1d_ref, ssm_kernels.ssd_chunked, ssm_kernels.rmsnorm_gated)
    return _ScanOps(ssm_ref.causal_conv1d_ref, ssm_ref.ssd_chunked_ref, ssm_ref.rmsnorm_gated_ref)


class RMSNormGated(nn.Module):
    """Holds the gated RMSNorm weight (named and shaped like mamba_ssm's RMSNormGated: norm.weight)."""

    def __init__(
        self,
        dim: int,
        group_size: int,
        eps: float = 1e-5,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.group_size = group_size
        self.eps = eps


class Mamba2(nn.Module):
    """Mamba2 mixer; backend "ref" (plain PyTorch), "kernel" (mamba-ssm + causal-conv1d, CUDA), "triton"
    (mamba-ssm's Triton scan + PyTorch conv, CUDA) or "auto"."""

    def __init__(
        self,
        d_model: int,
        cfg: MambaConfig,
        backend: str = "ref",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        a_init_range: tuple[float, float] = (1.0, 16.0),
    ) -> None:
        super().__init__()
        if backend not in ssm_kernels.BACKEND_REQUESTS:
            raise ValueError(f"backend must be one of {ssm_kernels.BACKEND_REQUESTS}, got {backend!r}")
        self.backend = backend
        self._chosen: dict[str, str] = {}  # device type -> resolved backend
        self.d_model, self.cfg = d_model, cfg
        self.d_inner = cfg.d_inner(d_model)
        self.nheads = cfg.nheads(d_model)
        if self.nheads * cfg.headdim != self.d_inner:
            raise ValueError(f"d_inner {self.d_inner} is not a multiple of headdim {cfg.headdim}")
        self.conv_dim = self.d_inner + 2 * cfg.ngroups * cfg.d_state
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        fp32: dict[str, Any] = {"device": device, "dtype": torch.float32}

        self.in_proj = nn.Linear(d_model, cfg.in_proj_width(d_model), bias=False, **factory)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim, padding=cfg.d_conv - 1, **factory
        )
        # dt = softplus(raw + dt_bias) starts log-uniform in [dt_min, dt_max]: dt_bias = softplus^-1(dt).
        log_dt = torch.rand(self.nheads, **fp32) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads, **fp32).uniform_(*a_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads, **fp32))
        self.norm = RMSNormGated(self.d_inner, self.d_inner // cfg.ngroups, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory)

    def backend_for(self, device: torch.device) -> str:
        """The backend that runs on ``device``, resolved (and logged) once per device type: a plain dict
        lookup afterwards, so torch.compile traces through it (M4VNetwork.compile_blocks primes it)."""
        chosen = self._chosen.get(device.type)
        if chosen is None:
            chosen = self._chosen[device.type] = resolve_backend(self.backend, device)
        return chosen

    def forward(
        self, x: Tensor, state: SSMState | None = None, return_state: bool = False
    ) -> tuple[Tensor, SSMState | None]:
        """x (B, L, d_model) -> (B, L, d_model) [, state after x]; resumes from `state` when given."""
        if x.shape[1] == 0:
            return self._empty(x, state, return_state)
        ops = _scan_ops(self.backend_for(x.device))
        z, xbc, dt = self._split_in_proj(self.in_proj(x))
        xbc, conv_tail = self._conv(ops, xbc, state, return_state)  # (B, L, conv_dim)
        xs, b, c = self._split_xbc(xbc)
        y, ssm = self._scan(ops, xs, dt, b, c, state, return_state)  # (B, L, H, P)
        y = ops.rmsnorm_gated(
            y.flatten(2), self.norm.weight, z, self.norm.eps, self.norm.group_size, norm_before_gate=False
        )  # (B, L, d_inner)
        out = self.out_proj(y)  # (B, L, d_model)
        if not return_state:
            return out, None
        assert conv_tail is not None and ssm is not None
        return out, SSMState(conv=conv_tail, ssm=ssm)

    def _conv(
        self, ops: _ScanOps, xbc: Tensor, state: SSMState | None, return_state: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Causal depthwise conv + SiLU over (B, L, conv_dim), continuing from state.conv if given."""
        res = ops.causal_conv1d(
            xbc.transpose(1, 2),  # (B, conv_dim, L): a channel-last view, as causal-conv1d wants
            self.conv1d.weight.squeeze(1),  # (conv_dim, d_conv)
            self.conv1d.bias,
            initial_states=None if state is None else state.conv,
            return_final_states=return_state,
            activation="silu",
        )
        y, tail = res if return_state else (res, None)
        return y.transpose(1, 2), tail  # (B, L, conv_dim), (B, conv_dim, d_conv-1) | None

    def _scan(
        self,
        ops: _ScanOps,
        xs: Tensor,
        dt: Tensor,
        b: Tensor,
        c: Tensor,
        state: SSMState | None,
        return_state: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """SSD scan with softplus(dt + dt_bias), A = -exp(A_log), skip D; A/dt/D read in fp32 always."""
        res = ops.ssd_chunked(
            xs,
            dt,
            -torch.exp(self.A_log.float()),
            b,
            c,
            self.cfg.chunk_size,
            D=self.D.float(),
            dt_bias=self.dt_bias.float(),
            dt_softplus=True,
            initial_states=None if state is None else state.ssm,
            return_final_states=return_state,
        )
        return res if return_state else (res, None)

    def _split_in_proj(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, in_proj_width) -> z (B, L, d_inner), xBC (B, L, conv_dim), dt (B, L, nheads)."""
        z, xbc, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        return z, xbc, dt

    def _split_xbc(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, conv_dim) -> x (B, L, H, P), B (B, L, G, N), C (B, L, G, N)."""
        g, n = self.cfg.ngroups, self.cfg.d_state
        xs, b, c = torch.split(xbc, [self.d_inner, g * n, g * n], dim=-1)
        batch, seqlen, _ = xbc.shape
        xs = xs.reshape(batch, seqlen, self.nheads, self.cfg.headdim)  # (B, L, H, P)
        return xs, b.reshape(batch, seqlen, g, n), c.reshape(batch, seqlen, g, n)  # (B, L, G, N) x2

    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> SSMState:
        """The state before any token: zeros (what forward() uses when state is None)."""
        conv = torch.zeros(batch, self.conv_dim, self.cfg.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch, self.nheads, self.cfg.headdim, self.cfg.d_state, device=device)
        return SSMState(conv, ssm)

    def _empty(self, x: Tensor, state: SSMState | None, return_state: bool) -> tuple[Tensor, SSMState | None]:
        """L = 0: no output tokens; the state passes through unchanged (zeros when none was given)."""
        out = x.new_zeros(x.shape[0], 0, self.d_model)
        if not return_state:
            return out, None
        return out, state if state is not None else self.initial_state(x.shape[0], x.device, x.dtype)


__all__ = ["Mamba2", "RMSNormGated", "SSMState"]
