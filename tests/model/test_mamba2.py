"""Mamba2 mixer on the ref backend: mamba_ssm parameter layout, context caching by state, dtype policy,
backend selection."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from model import ssm_kernels
from model.config import MambaConfig
from model.mamba2 import Mamba2, SSMState
from model.ssm_kernels import resolve_backend

SMALL = MambaConfig(d_state=16, d_conv=4, expand=2, headdim=16, ngroups=1, chunk_size=32)
D_MODEL = 32


def _mixer(cfg: MambaConfig = SMALL, dtype: torch.dtype | None = None, seed: int = 0) -> Mamba2:
    torch.manual_seed(seed)
    m = Mamba2(D_MODEL, cfg, dtype=dtype)
    with torch.no_grad():  # D = 1 and zero-ish dt make a weak test; perturb what init leaves trivial
        m.D.uniform_(0.5, 1.5)
        m.norm.weight.uniform_(0.5, 1.5)
    return m


def test_parameters_match_mamba_ssm_layout_at_m4v_width() -> None:
    m = Mamba2(1920, MambaConfig(), device="meta")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "dt_bias": (48,),
        "A_log": (48,),
        "D": (48,),
        "in_proj.weight": (7984, 1920),
        "conv1d.weight": (4096, 1, 4),
        "conv1d.bias": (4096,),
        "norm.weight": (3840,),
        "out_proj.weight": (1920, 3840),
    }
    assert m.nheads == 48 and m.conv1d.padding == (3,) and m.conv1d.groups == 4096


def test_initialisation_follows_mamba_ssm() -> None:
    m = Mamba2(64, MambaConfig(d_state=16, headdim=8))  # 16 heads
    dt = F.softplus(m.dt_bias)
    assert bool(((dt >= 1e-3 * 0.999) & (dt <= 0.1 * 1.001)).all())
    a = torch.exp(m.A_log)
    assert bool(((a >= 1.0) & (a <= 16.0)).all())
    assert bool((m.D == 1).all())


@pytest.mark.parametrize("seqlen", [1, 5, 70])
def test_output_has_input_shape(seqlen: int) -> None:
    y, state = _mixer()(torch.randn(3, seqlen, D_MODEL))
    assert y.shape == (3, seqlen, D_MODEL) and state is None


@pytest.mark.parametrize(
    "splits",
    [[1], [2], [3], [31, 32], [32, 33, 34], [5, 40, 64, 65], [1, 2, 3, 4, 5, 6, 7], [99]],
)
def test_resuming_from_returned_state_equals_one_pass(splits: list[int]) -> None:
    m = _mixer()
    x = torch.randn(2, 100, D_MODEL)
    with torch.no_grad():
        full, full_state = m(x, return_state=True)
        pieces, state = [], None
        for lo, hi in zip([0, *splits], [*splits, 100], strict=True):
            y, state = m(x[:, lo:hi], state=state, return_state=True)
            pieces.append(y)
    assert isinstance(state, SSMState) and isinstance(full_state, SSMState)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.ssm, full_state.ssm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.conv, full_state.conv)


def test_context_state_is_reusable_for_many_continuations() -> None:
    # The sampler's pattern: run the context once, then several different frames from the same state.
    m = _mixer()
    ctx, frames = torch.randn(2, 40, D_MODEL), [torch.randn(2, 9, D_MODEL) for _ in range(3)]
    with torch.no_grad():
        _, state = m(ctx, return_state=True)
        for f in frames:
            y, _ = m(f, state=state)
            want, _ = m(torch.cat([ctx, f], dim=1))
            torch.testing.assert_close(y, want[:, 40:], rtol=1e-5, atol=1e-5)


def test_state_changes_the_output() -> None:
    m = _mixer()
    ctx, f = torch.randn(1, 20, D_MODEL), torch.randn(1, 5, D_MODEL)
    with torch.no_grad():
        _, state = m(ctx, return_state=True)
        with_ctx, _ = m(f, state=state)
        without, _ = m(f)
    assert (with_ctx - without).abs().max() > 1e-3


def test_state_shapes_and_dtypes() -> None:
    m = _mixer()
    _, state = m(torch.randn(2, 7, D_MODEL), return_state=True)
    assert isinstance(state, SSMState)
    assert state.conv.shape == (2, m.conv_dim, SMALL.d_conv - 1) and state.conv.dtype == torch.float32
    assert state.ssm.shape == (2, m.nheads, SMALL.headdim, SMALL.d_state) and state.ssm.dtype == torch.float32


def test_empty_sequence_returns_no_tokens_and_passes_state_through() -> None:
    m = _mixer()
    _, state = m(torch.randn(2, 6, D_MODEL), return_state=True)
    y, same = m(torch.randn(2, 0, D_MODEL), state=state, return_state=True)
    assert y.shape == (2, 0, D_MODEL) and same is state
    _, fresh = m(torch.randn(2, 0, D_MODEL), return_state=True)
    assert isinstance(fresh, SSMState) and not fresh.ssm.any() and not fresh.conv.any()


def test_grouped_b_c_run_and_resume() -> None:
    cfg = MambaConfig(d_state=8, headdim=8, ngroups=2, chunk_size=16)
    m = _mixer(cfg)
    x = torch.randn(1, 40, D_MODEL)
    with torch.no_grad():
        full, _ = m(x)
        y1, s = m(x[:, :17], return_state=True)
        y2, _ = m(x[:, 17:], state=s)
    torch.testing.assert_close(torch.cat([y1, y2], 1), full, rtol=1e-5, atol=1e-5)


def test_bf16_module_keeps_ssm_parameters_fp32_and_tracks_fp32_output() -> None:
    m32 = _mixer()
    m16 = Mamba2(D_MODEL, SMALL, dtype=torch.bfloat16)
    assert {m16.A_log.dtype, m16.dt_bias.dtype, m16.D.dtype} == {torch.float32}
    assert m16.in_proj.weight.dtype == m16.conv1d.weight.dtype == m16.norm.weight.dtype == torch.bfloat16
    m16.load_state_dict(m32.state_dict())
    x = torch.randn(2, 50, D_MODEL)
    with torch.no_grad():
        y16, state = m16(x.bfloat16(), return_state=True)
        y32, _ = m32(x)
    assert y16.dtype == torch.bfloat16 and bool(torch.isfinite(y16).all())
    assert isinstance(state, SSMState)
    assert state.ssm.dtype == torch.float32 and state.conv.dtype == torch.bfloat16
    rel = ((y16.float() - y32).norm() / y32.norm()).item()
    assert rel < 3e-2, rel


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="fast"):
        Mamba2(D_MODEL, SMALL, backend="fast")


def test_auto_backend_on_cpu_is_ref_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ssm_kernels._log_choice.cache_clear()
    with caplog.at_level(logging.INFO, logger="model.ssm_kernels"):
        assert resolve_backend("auto", "cpu") == "ref"
        assert resolve_backend("auto", torch.device("cpu")) == "ref"
    msgs = [r.getMessage() for r in caplog.records if r.name == "model.ssm_kernels"]
    assert len(msgs) == 1 and "ref" in msgs[0] and "not CUDA" in msgs[0]


def test_kernel_backend_on_cpu_raises() -> None:
    m = Mamba2(D_MODEL, SMALL, backend="kernel")
    with pytest.raises(RuntimeError, match="CUDA"):
        m(torch.randn(1, 4, D_MODEL))


@pytest.mark.skipif(ssm_kernels.kernels_available(), reason="kernels are installed here")
def test_kernel_backend_without_kernels_names_the_install_command() -> None:
    assert not ssm_kernels.kernels_available()
    with pytest.raises(RuntimeError, match=r"pip install 'm4v-serve\[gpu\]'"):
        resolve_backend("kernel", "cuda")
    with pytest.raises(RuntimeError, match="bench/README.md"):
        ssm_kernels.require_kernels()


def test_importing_the_kernel_module_imports_no_kernel_package() -> None:
    code = (
        "import sys, model.ssm_kernels, model.mamba2; "
        "bad = [m for m in ('mamba_ssm', 'causal_conv1d', 'triton') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
