"""Pyramidal flow-matching maths: stage ranges, jump-point correction, renoise statistics.

Statistical tests use a fixed seed and enough samples (>= 1M values) that the standard error of a variance
estimate is about 0.0015; the tolerances below (0.01-0.02) are > 6 standard errors.
"""

from __future__ import annotations

import pytest
import torch

from model.schedule import (
    block_noise,
    build_stages,
    corrected_start,
    euler_step,
    renoise,
    renoise_coefficients,
    stage_boundaries,
    start_noise,
    upsample_nearest2x,
)

GAMMA = 1.0 / 3.0


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _block_corr(x: torch.Tensor) -> float:
    """Mean correlation between horizontal neighbours inside 2x2 blocks of (..., H, W)."""
    left, right = x[..., :, 0::2], x[..., :, 1::2]
    return float(((left - left.mean()) * (right - right.mean())).mean() / (left.std() * right.std()))


def test_stage_boundaries_follow_the_training_grid() -> None:
    assert stage_boundaries(3) == pytest.approx([1.0, 0.667, 0.334, 0.0])
    assert stage_boundaries(3, grid=3) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


def test_renoise_coefficients_match_pyramidflow_values() -> None:
    stages = build_stages(3, GAMMA)
    assert stages[0].renoise is None
    assert stages[1].renoise is not None and stages[2].renoise is not None
    assert (stages[1].renoise.a, stages[1].renoise.b) == pytest.approx((0.5999, 0.6930), abs=1e-4)
    assert (stages[2].renoise.a, stages[2].renoise.b) == pytest.approx((0.7496, 0.4337), abs=1e-4)


def test_corrected_stage_starts_are_1_080_050() -> None:
    starts = [s.start for s in build_stages(3, GAMMA)]
    assert starts == pytest.approx([1.0, 0.80, 0.50], abs=1e-3)
    ends = [s.end for s in build_stages(3, GAMMA)]
    assert ends == pytest.approx([0.667, 0.334, 0.0])


def test_corrected_start_is_one_minus_signal_coefficient_times_alpha() -> None:
    for original in (0.9, 2 / 3, 1 / 3, 0.1):
        alpha = renoise_coefficients(original, GAMMA).a
        assert corrected_start(original, GAMMA) == pytest.approx(1 - (1 - original) * alpha)
    # Exact grid: the ideal values 0.8 and 0.5.
    assert corrected_start(2 / 3, GAMMA) == pytest.approx(0.8)
    assert corrected_start(1 / 3, GAMMA) == pytest.approx(0.5)


def test_stage_sigmas_are_linear_from_corrected_start_to_end() -> None:
    stage = build_stages(3, GAMMA)[1]
    sigmas = stage.sigmas(4)
    assert sigmas.shape == (5,)
    assert float(sigmas[0]) == pytest.approx(stage.start)
    assert float(sigmas[-1]) == pytest.approx(stage.end)
    assert torch.allclose(sigmas.diff(), sigmas.diff()[0].expand(4))
    with pytest.raises(ValueError, match="steps"):
        stage.sigmas(0)


def test_euler_step_with_exact_velocity_lands_on_the_flow() -> None:
    x0, noise = torch.randn(2, 3, 4, 4, generator=_gen(1)), torch.randn(2, 3, 4, 4, generator=_gen(2))
    x = 0.3 * x0 + 0.7 * noise  # sigma = 0.7
    out = euler_step(x, noise - x0, 0.7, 0.2)
    assert torch.allclose(out, 0.8 * x0 + 0.2 * noise, atol=1e-6)


def test_block_noise_has_unit_variance_and_negative_gamma_within_blocks() -> None:
    n = block_noise((4, 8, 128, 256), GAMMA, _gen())
    assert abs(float(n.var()) - 1.0) < 0.01
    assert abs(float(n.mean())) < 0.01
    assert abs(_block_corr(n) + GAMMA) < 0.01
    # Across block borders the noise is independent.
    across = n[..., :, 1:-1:2], n[..., :, 2::2]
    assert abs(float((across[0] * across[1]).mean())) < 0.01


def test_block_noise_rejects_gamma_above_one_third() -> None:
    with pytest.raises(ValueError, match="renoise_gamma"):
        block_noise((1, 1, 4, 4), 0.5, _gen())


def test_start_noise_downsampled_keeps_unit_variance() -> None:
    x = start_noise(2, 8, 4, (128, 128), 3, _gen())
    assert x.shape == (2, 8, 4, 32, 32)
    assert abs(float(x.var()) - 1.0) < 0.02
    # Neighbouring low-res values come from disjoint 2x2 blocks: uncorrelated.
    assert abs(_block_corr(x)) < 0.02


@pytest.mark.parametrize("stage_index", [1, 2])
def test_renoise_turns_block_constant_noise_into_white_noise_at_the_corrected_level(stage_index: int) -> None:
    stage = build_stages(3, GAMMA)[stage_index]
    assert stage.renoise is not None
    # The noise part of a latent at the end of the previous stage: sigma_e * white noise at low resolution.
    low = stage.original_start * torch.randn(4, 8, 128, 128, generator=_gen(3))
    up = upsample_nearest2x(low)
    assert _block_corr(up) == pytest.approx(1.0)
    out = renoise(low, stage.renoise, GAMMA, _gen(4)) / stage.start
    assert out.shape == (4, 8, 256, 256)
    assert abs(float(out.var()) - 1.0) < 0.01
    assert abs(_block_corr(out)) < 0.01


def test_renoise_scales_the_signal_to_one_minus_corrected_start() -> None:
    stage = build_stages(3, GAMMA)[1]
    assert stage.renoise is not None
    signal = torch.ones(1, 1, 4, 4)
    x_end = (1 - stage.original_start) * signal  # clean part of the latent at the end of stage 0
    # Average the noise away: the expected output is the scaled signal.
    outs = torch.stack([renoise(x_end, stage.renoise, GAMMA, _gen(s)) for s in range(2000)])
    assert float(outs.mean()) == pytest.approx(1 - stage.start, abs=0.02)
