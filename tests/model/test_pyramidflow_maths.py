"""attn-768p's PyramidFlow maths: the scheduler's timesteps and step sizes, the first-frame VAE factors, the
mask in which text sees frame 0, and the sampler driving the network with them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from model.config import VAEConfig, get_preset
from model.joint_attention import joint_mask
from model.sampler import sample_video, stage_steps
from model.schedule import build_stages, pyramidflow_stage_steps
from model.text_encoder import TextEmbeddings
from model.vae import CausalVAE


def pf_scheduler(num_stages: int, gamma: float, stage: int, steps: int) -> tuple[list[float], list[float]]:
    """PyramidFlowMatchEulerDiscreteScheduler (shift 1, stage_range k/S) transcribed from
    diffusion_schedulers/scheduling_flow_matching.py: (timesteps fed to the DiT, sigmas of step())."""
    n = 1000
    sigmas = np.linspace(1, n, n, dtype=np.float32)[::-1].copy() / n
    timesteps = sigmas * n
    rng = [i / num_stages for i in range(num_stages + 1)]
    starts, ends, dist = {}, {}, []
    for s in range(num_stages):
        si, ei = max(int(rng[s] * n), 0), min(int(rng[s + 1] * n), n)
        start = float(sigmas[si])
        end = float(sigmas[ei]) if ei < n else 0.0
        if s:
            ori = 1 - start
            start = 1 - (1 / (math.sqrt(1 + 1 / gamma) * (1 - ori) + ori)) * ori
        starts[s], ends[s] = start, end
        dist.append(start - end)
    tot = sum(dist)
    lo = 0.0 if stage == 0 else sum(dist[:stage]) / tot
    hi = 1.0 if stage == num_stages - 1 else sum(dist[: stage + 1]) / tot
    t_max, t_min = float(timesteps[int(lo * n)]), float(timesteps[min(int(hi * n), n - 1)])
    fine = np.linspace(t_max, t_min, n + 1)[:-1]
    ts = np.linspace(fine[0], fine[-1], steps)
    stage_sig = np.linspace(1, 0, n + 1)[:-1]
    sig = list(np.linspace(stage_sig[0], stage_sig[-1], steps)) + [0.0]
    return [float(x) for x in ts], [float(x) for x in sig]


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("steps", [1, 3, 10, 20])
def test_pyramidflow_schedule_matches_its_scheduler(stage: int, steps: int) -> None:
    ours = pyramidflow_stage_steps(3, 1 / 3, stage, steps)
    ts, sig = pf_scheduler(3, 1 / 3, stage, steps)
    assert len(ours.timesteps) == steps and len(ours.levels) == steps + 1
    np.testing.assert_allclose(ours.timesteps, ts, rtol=1e-6)
    np.testing.assert_allclose(ours.levels, sig, rtol=1e-9, atol=1e-12)


def test_pyramidflow_timesteps_are_remapped_not_sigma_times_1000() -> None:
    first = pyramidflow_stage_steps(3, 1 / 3, 0, 20)
    # stage 0 spans sigma 1 -> 0.667, but PyramidFlow feeds t from 1000 down to ~744 (its share of the
    # corrected total span); the global schedule would feed 1000 -> ~683
    assert first.timesteps[0] == 1000.0 and 740 < first.timesteps[-1] < 750
    cfg = get_preset("attn-768p")
    assert stage_steps(cfg, build_stages(3, 1 / 3)[0], 20) == first
    glob = stage_steps(get_preset("m4v-768p"), build_stages(3, 1 / 3)[0], 20)
    assert glob.timesteps[-1] == pytest.approx(1000 * glob.levels[-2])


def test_first_latent_frame_uses_the_image_factors() -> None:
    cfg = dataclasses.replace(
        get_preset("tiny").vae,
        scaling_factor=0.5,
        shift_factor=0.1,
        image_scaling_factor=2.0,
        image_shift_factor=-1.0,
    )
    vae = CausalVAE(cfg)
    z = torch.randn(1, cfg.latent_channels, 3, 2, 2)
    un = vae.unscale(z)
    torch.testing.assert_close(un[:, :, 0], z[:, :, 0] / 2.0 - 1.0)
    torch.testing.assert_close(un[:, :, 1:], z[:, :, 1:] / 0.5 + 0.1)
    torch.testing.assert_close(vae.unscale(z, first_index=1), z / 0.5 + 0.1)  # a later chunk of the stream
    assert get_preset("attn-768p").vae.factors(True) == (1 / 1.8726, -0.04)
    assert get_preset("attn-768p").vae.factors(False) == (1 / 3.0986, -0.2343)
    assert VAEConfig().factors(True) == VAEConfig().factors(False)


def test_pyramidflow_mask_lets_text_see_frame_zero_only() -> None:
    text_mask = torch.tensor([[True, True, False]])
    frame_ids = torch.tensor([0, 0, 1, 1])
    m = joint_mask(text_mask, frame_ids, causal=False, text_sees_first_frame=True)[0, 0]
    valid_text = m[0]
    assert valid_text.tolist() == [True, True, False, True, True, False, False]
    assert m[5].tolist() == [True, True, False, True, True, True, True]  # frame 1 sees text, frames 0-1
    causal = joint_mask(text_mask, frame_ids, causal=True)[0, 0]
    assert causal[0].tolist() == [True, True, False, False, False, False, False]


class _RecordingNet:
    """Velocity 0 everywhere; records the timesteps and whether the context cache was asked for."""

    def __init__(self) -> None:
        self.ts: list[float] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **context: object) -> torch.Tensor:
        assert "cache" not in context
        self.ts.append(float(t[0]))
        return torch.zeros_like(x)

    def prepare_context(self, **_: object) -> object:
        raise AssertionError("pyramidflow mode is never cached")


def test_sampler_feeds_pyramidflow_timesteps_uncached() -> None:
    cfg = get_preset("attn-768p")
    net = _RecordingNet()
    text = TextEmbeddings(torch.zeros(2, 4, 8), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 8))
    sample_video(
        net,  # type: ignore[arg-type]
        text,
        cfg,
        num_latent_frames=2,
        full_hw=(8, 8),
        steps_first=(2, 2, 2),
        steps_later=(1, 1, 1),
        guidance_first=7.0,
        guidance_later=5.0,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
        dtype=torch.float32,
        use_cache=True,
    )
    want = [t for s in range(3) for t in pyramidflow_stage_steps(3, 1 / 3, s, 2).timesteps]
    want += [t for s in range(3) for t in pyramidflow_stage_steps(3, 1 / 3, s, 1).timesteps]
    assert net.ts == pytest.approx(want)
