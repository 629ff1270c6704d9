"""Fused CUDA/Triton twins of model/ssm_ref.py (same signatures), plus the backend choice.

The kernels come from mamba-ssm (Triton SSD scan, gated RMSNorm) and causal-conv1d (CUDA depthwise conv).
Nothing is imported at module import: the imports happen on first use, so CPU-only installs (the API image,
the tiny preset on a laptop) never need them. Install: pip install 'm4v-serve[gpu]'; for an offline GPU
machine see bench/README.md, "Running it on a GPU box" (a prebuilt sm_90 set or a build from the sdists).

Backend policy: the choice is explicit and logged once; asking for "kernel" where it cannot run
raises. "auto" picks the kernels only on a CUDA device with both packages importable, and says why otherwise.
There is no silent fallback once a backend is chosen.
"""

# A, B, C, D are the SSM's names in the paper and in mamba_ssm's signatures, which these functions mirror.
# ruff: noqa: N803

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from model.ssm_ref import Activation, rmsnorm_gated_ref

logger = logging.getLogger(__name__)

Backend = Literal["kernel", "triton", "ref"]
BackendRequest = Literal["auto", "kernel", "triton", "ref"]
# "triton": mamba-ssm's Triton SSD scan and gated norm (forward and backward) with the plain-PyTorch
# causal conv; needs no CUDA build (no causal-conv1d), which is what training uses.
BACKEND_REQUESTS: tuple[str, ...] = ("auto", "kernel", "triton", "ref")

INSTALL_HINT = (
    "install the fused kernels with: pip install 'm4v-serve[gpu]' "
    "(on an offline GPU machine: see bench/README.md, Running it on a GPU box)"
)


@functools.cache
def _kernel_import_error() -> str | None:
    """None when mamba-ssm and causal-conv1d import; else the reason (probed once per process)."""
    try:
        import causal_conv1d  # noqa: F401
        import mamba_ssm.ops.triton.layernorm_gated  # noqa: F401
        import mamba_ssm.ops.triton.ssd_combined  # noqa: F401
    except (ImportError, OSError) as e:  # OSError: a built .so that does not load (CUDA/torch ABI mismatch)
        return f"{type(e).__name__}: {e}"
    return None


@functools.cache
def _triton_import_error() -> str | None:
    """None when mamba-ssm's Triton SSD scan and gated norm import (no causal-conv1d needed)."""
    try:
        import mamba_ssm.ops.triton.layernorm_gated  # noqa: F401
        import mamba_ssm.ops.triton.ssd_combined  # noqa: F401
    except (ImportError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def triton_available() -> bool:
    """True when mamba-ssm's Triton scan imports (the "triton" backend; no causal-conv1d needed)."""
    return _triton_import_error() is None


def kernels_available() -> bool:
    """True when mamba-ssm and causal-conv1d can be imported (says nothing about a GPU being present)."""
    return _kernel_import_error() is None


def require_kernels() -> None:
    """Raise RuntimeError naming the install command when the kernels cannot be imported."""
    err = _kernel_import_error()
    if err is not None:
        raise RuntimeError(f"Mamba2 kernel backend unavailable ({err}); {INSTALL_HINT}")


@functools.cache
def _log_choice(requested: str, chosen: str, reason: str) -> None:
    logger.info("Mamba2 scan backend: %s (requested %s; %s)", chosen, requested, reason)


def resolve_backend(requested: str, device: torch.device | str) -> Backend:
    """Map "auto" | "kernel" | "ref" and a device to the backend that runs; logged once per decision."""
    if requested not in BACKEND_REQUESTS:
        raise ValueError(f"backend must be one of {BACKEND_REQUESTS}, got {requested!r}")
    on_cuda = torch.device(device).type == "cuda"
    chosen: Backend
    if requested == "ref":
        chosen, reason = "ref", "plain PyTorch"
    elif requested in ("kernel", "triton"):
        if not on_cuda:
            raise RuntimeError(f"Mamba2 {requested} backend needs a CUDA device, got {device!s}")
        if requested == "kernel":
            require_kernels()
            chosen, reason = "kernel", "mamba-ssm + causal-conv1d"
        elif (err := _triton_import_error()) is not None:
            raise RuntimeError(f"Mamba2 triton backend unavailable ({err}); {INSTALL_HINT}")
        else:
            chosen, reason = "triton", "mamba-ssm Triton SSD scan + PyTorch conv"
    elif not on_cuda:
        chosen, reason = "ref", f"device {device!s} is not CUDA"
    elif (err := _kernel_import_error()) is not None:
        chosen, reason = "ref", f"kernels not importable ({err}); {INSTALL_HINT}"
    else:
        chosen, reason = "kernel", "CUDA device and kernels importable"
    _log_choice(requested, chosen, reason)
    return chosen


def _channel_last(t: Tensor) -> Tensor:
    """(B, D, L) with stride(1) == 1, the layout causal-conv1d needs for initial/final states."""
    return t if t.stride(1) == 1 else t.transpose(1, 2).contiguous().transpose(1, 2)


def _import(module: str, name: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except (ImportError, OSError) as e:
        raise RuntimeError(
            f"Mamba2 kernel {module}.{name} unavailable ({type(e).__name__}: {e}); {INSTALL_HINT}"
        ) from e


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    activation: Activation = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """causal_conv1d.causal_conv1d_fn; see ssm_ref.causal_conv1d_ref for the contract.

    The kernel takes initial/final states only in channel-last layout (stride(1) == 1, channels a multiple
    of 8), and initial states in x's dtype; both are arranged here.
    """
    fn = _import("causal_conv1d", "causal_conv1d_fn")
    if initial_states is not None or return_final_states:
        x = _channel_last(x)
    if initial_states is not None:
        initial_states = _channel_last(initial_states.to(x.dtype))
    return fn(  # type: ignore[no-any-return]
        x,
        weight,
        bias=bias,
        initial_states=initial_states,
        return_final_states=return_final_states,
        activation=activation,
    )


def ssd_chunked(
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
    """mamba_ssm's mamba_chunk_scan_combined; see ssm_ref.ssd_chunked_ref for the contract."""
    fn = _import("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
    return fn(  # type: ignore[no-any-return]
        x,
        dt,
        A,
        B,
        C,
        chunk_size,
        D=D,
        z=z,
        dt_bias=dt_bias,
        initial_states=initial_states,
        dt_softplus=dt_softplus,
        return_final_states=return_final_states,
    )


def rmsnorm_gated(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    eps: float = 1e-5,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """mamba_ssm's rmsnorm_fn (RMSNormGated); see ssm_ref.rmsnorm_gated_ref for the contract.

    Under torch.compile the plain-torch norm is traced instead: inductor fuses it with its neighbours, and
    dynamo cannot trace mamba_ssm's Triton launch with dynamic shapes (SymNodeVariable has no value)."""
    if torch.compiler.is_compiling():
        return rmsnorm_gated_ref(x, weight, z, eps, group_size, norm_before_gate)
    fn = _import("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn")
    return fn(  # type: ignore[no-any-return]
        x, weight, None, z=z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate
    )
