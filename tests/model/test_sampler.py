"""The denoise loop against the real tiny network (random weights, fp32, CPU, small latent grids)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from model.config import ModelConfig, get_preset
from model.network import M4VNetwork
from model.pipeline_types import StepProgress
from model.sampler import _history, sample_video
from model.text_encoder import TextEmbeddings

FULL_HW = (16, 16)  # latent grid: stages at 4x4, 8x8, 16x16


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny tensors on a shared 2-core machine: intra-op threads only spin against each other (50x slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return get_preset("tiny")


@pytest.fixture(scope="module")
def net(cfg: ModelConfig) -> M4VNetwork:
    torch.manual_seed(0)
    return M4VNetwork(
        cfg.network,
        latent_channels=cfg.vae.latent_channels,
        text_dim=cfg.text.token_dim,
        pooled_dim=cfg.text.pooled_dim,
        scan_backend="ref",
    ).eval()


def _text(cfg: ModelConfig, seed: int = 1, rows: int = 2) -> TextEmbeddings:
    g = torch.Generator().manual_seed(seed)
    n, d = cfg.text.max_tokens, cfg.text.token_dim
    mask = torch.ones(rows, n, dtype=torch.bool)
    mask[:, n // 2 :] = False
    return TextEmbeddings(
        torch.randn(rows, n, d, generator=g), mask, torch.randn(rows, cfg.text.pooled_dim, generator=g)
    )


def _sample(net: M4VNetwork, cfg: ModelConfig, **overrides: Any) -> torch.Tensor:
    kwargs: dict[str, Any] = {
        "num_latent_frames": 3,
        "full_hw": FULL_HW,
        "steps_first": (2, 1, 1),
        "steps_later": (1, 1, 1),
        "guidance_first": 7.0,
        "guidance_later": 5.0,
        "generator": torch.Generator().manual_seed(0),
        "device": "cpu",
        "dtype": torch.float32,
        "use_cache": True,
    }
    kwargs.update(overrides)
    text = kwargs.pop("text", None) or _text(cfg)
    with torch.inference_mode():
        return sample_video(net, text, cfg, **kwargs)


@contextmanager
def _count_calls(net: M4VNetwork) -> Iterator[list[int]]:
    """Batch size of every network forward (a real forward hook, not a mock)."""
    calls: list[int] = []
    handle = net.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    try:
        yield calls
    finally:
        handle.remove()


def test_same_seed_gives_identical_latents_and_another_seed_differs(
    net: M4VNetwork, cfg: ModelConfig
) -> None:
    a = _sample(net, cfg)
    b = _sample(net, cfg)
    c = _sample(net, cfg, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, cfg.vae.latent_channels, 3, *FULL_HW)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.1


def test_network_runs_once_per_step_on_the_cfg_batch(net: M4VNetwork, cfg: ModelConfig) -> None:
    for use_cache in (True, False):
        with _count_calls(net) as calls:
            _sample(net, cfg, use_cache=use_cache)
        assert len(calls) == (2 + 1 + 1) + 2 * (1 + 1 + 1)
        assert set(calls) == {2}  # [cond; uncond] in one batch


def test_cached_and_uncached_agree_and_cache_processes_fewer_tokens(
    net: M4VNetwork, cfg: ModelConfig
) -> None:
    steps = {"steps_first": (1, 1, 1), "steps_later": (3, 3, 3)}  # the cache pays off over several steps
    net.reset_token_counts()
    cached = _sample(net, cfg, use_cache=True, **steps)
    cached_tokens = sum(net.token_counts.values())
    net.reset_token_counts()
    uncached = _sample(net, cfg, use_cache=False, **steps)
    uncached_tokens = sum(net.token_counts.values())
    rel = (cached - uncached).abs().max() / uncached.abs().max()
    assert rel <= 1e-4
    assert cached_tokens < 0.7 * uncached_tokens


def test_on_step_reports_every_step_in_order_with_right_totals(net: M4VNetwork, cfg: ModelConfig) -> None:
    seen: list[StepProgress] = []
    _sample(net, cfg, on_step=seen.append)
    expected = [(0, 0, 1), (0, 0, 2), (0, 1, 1), (0, 2, 1)] + [(u, s, 1) for u in (1, 2) for s in range(3)]
    assert [(p.unit, p.stage, p.step) for p in seen] == expected
    assert [p.steps_done for p in seen] == list(range(1, 11))
    assert {p.steps_all for p in seen} == {10}
    assert {p.units_total for p in seen} == {3}
    assert {p.stages_total for p in seen} == {3}
    assert [p.steps_total for p in seen[:2]] == [2, 2]
    assert seen[-1].fraction == 1.0
    assert all(p.step_seconds > 0 for p in seen)


def test_raising_in_on_step_stops_generation(net: M4VNetwork, cfg: ModelConfig) -> None:
    class CanceledError(Exception):
        pass

    def cancel_at_five(p: StepProgress) -> None:
        if p.steps_done == 5:
            raise CanceledError

    latents: list[int] = []
    with _count_calls(net) as calls, pytest.raises(CanceledError):
        _sample(net, cfg, on_step=cancel_at_five, on_latent=lambda unit, _x: latents.append(unit))
    assert len(calls) == 5
    assert latents == [0]  # unit 0 (4 steps) finished before the cancel; nothing after it


def test_on_latent_hands_out_each_clean_frame_in_order(net: M4VNetwork, cfg: ModelConfig) -> None:
    got: list[tuple[int, torch.Tensor]] = []
    out = _sample(net, cfg, on_latent=lambda unit, x: got.append((unit, x.clone())))
    assert [u for u, _ in got] == [0, 1, 2]
    assert all(x.shape == (1, cfg.vae.latent_channels, 1, *FULL_HW) for _, x in got)
    assert torch.equal(torch.cat([x for _, x in got], dim=2), out)


def test_guidance_combines_cond_first_then_uncond(net: M4VNetwork, cfg: ModelConfig) -> None:
    text, other = _text(cfg, seed=1), _text(cfg, seed=2)

    def rows(cond: TextEmbeddings, uncond: TextEmbeddings) -> TextEmbeddings:
        pick = [
            TextEmbeddings(t.tokens[i : i + 1], t.mask[i : i + 1], t.pooled[i : i + 1])
            for t, i in ((cond, 0), (uncond, 1))
        ]
        return TextEmbeddings.cat(pick)

    g0 = {"guidance_first": 0.0, "guidance_later": 0.0, "num_latent_frames": 1}
    # Guidance 0 keeps only the unconditional velocity: the cond row (first) must not matter.
    a = _sample(net, cfg, text=rows(text, text), **g0)
    b = _sample(net, cfg, text=rows(other, text), **g0)
    c = _sample(net, cfg, text=rows(text, other), **g0)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_history_is_a_compressed_pyramid_oldest_first() -> None:
    # pyramids[j][level] tagged with (frame, level) so the choice is visible.
    pyramids = [[torch.tensor([j, lvl]) for lvl in range(3)] for j in range(5)]
    picks = lambda unit, stage: [tuple(t.tolist()) for t in _history(pyramids, unit, stage)]  # noqa: E731
    assert picks(0, 2) == []
    assert picks(5, 2) == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 2)]
    assert picks(5, 1) == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 1)]
    assert picks(5, 0) == [(j, 0) for j in range(5)]
    assert picks(2, 2) == [(0, 1), (1, 2)]


def test_sampler_rejects_bad_inputs(net: M4VNetwork, cfg: ModelConfig) -> None:
    with pytest.raises(ValueError, match="steps_first"):
        _sample(net, cfg, steps_first=(1, 1))
    with pytest.raises(ValueError, match="2B rows"):
        _sample(net, cfg, text=_text(cfg, rows=3))
    with pytest.raises(ValueError, match="divisible"):
        _sample(net, cfg, full_hw=(18, 16))
