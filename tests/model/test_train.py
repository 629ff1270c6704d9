"""A few CPU steps of each training phase: finite losses, a JSON-lines log, a checkpoint that loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from model.config import get_preset
from model.pipeline import VideoPipeline
from model.schedule import build_stages
from model.text_encoder import RandomTextEncoder
from model.train.captions import train_captions
from model.train.common import LossLog, export
from model.train.flow_batch import flow_example, frame_pyramids
from model.train.run import build_models
from model.train.text_cache import TextCache, build_cache
from model.train.train_network import NetTrainConfig, train_network
from model.train.train_vae import VAETrainConfig, normalise_latents, train_vae

CPU = torch.device("cpu")


def _small_tiny():  # the tiny preset's modules on 32x32, 5-frame clips: same weights, seconds on CPU
    return dataclasses.replace(get_preset("tiny"), resolutions=((32, 32),), default_frames=5)


def test_flow_example_matches_sampler_convention_on_stage_zero() -> None:
    cfg = get_preset("tiny")
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 8, 3, 8, 8, generator=g)
    stage0 = build_stages(3, cfg.sampler.renoise_gamma)[0]
    ex = flow_example(frame_pyramids(latents, 3), 2, stage0, 1000.0, torch.Generator().manual_seed(1))
    noise = torch.randn(ex.x.shape, generator=torch.Generator().manual_seed(1))
    clean = frame_pyramids(latents, 3)[2][0]
    torch.testing.assert_close(ex.target, noise - clean)  # v = noise - x0
    sigma = (ex.t / 1000.0)[:, None, None, None]
    torch.testing.assert_close(ex.x, (1 - sigma) * clean + sigma * noise)
    assert [h.shape[-1] for h in ex.history] == [2, 2]  # older frames at the lowest level


def test_training_phases_run_on_cpu_and_checkpoint_loads(tmp_path: Path) -> None:
    cfg = _small_tiny()
    net, vae = build_models(cfg, CPU, seed=0)
    loss_log = LossLog(tmp_path / "losses.jsonl", "vae")
    steps = train_vae(vae, cfg, VAETrainConfig(steps=1, batch=1, log_every=1), CPU, 0, loss_log)
    normalise_latents(vae, cfg, CPU, seed=1, n=4)
    cache_path = tmp_path / "text.safetensors"
    build_cache(RandomTextEncoder(384, 384, 32), [c for _, c in train_captions(1)], cache_path)
    tc = NetTrainConfig(steps=2, batch=2, log_every=1, captions_per_spec=1)
    net_log = LossLog(tmp_path / "losses.jsonl", "net")
    net_steps, ema = train_network(
        net, vae.requires_grad_(False), TextCache(cache_path), cfg, tc, CPU, 0, net_log
    )
    assert (steps, net_steps) == (1, 2)
    rows = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"vae", "net"}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    ema.copy_to(net)
    export(tmp_path / "tiny.safetensors", get_preset("tiny"), net, vae)
    pipe = VideoPipeline.from_preset("tiny", weights=str(tmp_path / "tiny.safetensors"), stand_in_text=True)
    loaded = dict(pipe.network.named_parameters())
    for name, p in net.named_parameters():  # shipped fp16 matrices, fp32 vectors
        want = p.detach().half().float() if p.ndim >= 2 else p.detach()
        torch.testing.assert_close(loaded[name], want)


class _RandomRows:
    """The TextCache interface over random embeddings (4 rows)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(2)
        self.tokens, self.pooled = torch.randn(4, 32, 384, generator=g), torch.randn(4, 384, generator=g)
        self.mask = torch.ones(4, 32, dtype=torch.bool)

    def rows(self, idx: torch.Tensor):  # noqa: ANN201
        from model.text_encoder import TextEmbeddings

        return TextEmbeddings(self.tokens[idx], self.mask[idx], self.pooled[idx])


def _units_seen(layout: str, phase: int = 0) -> list[list[int]]:
    """Per stage, the unit (history length) of each network call of one flow_loss."""
    from model.train.flow_loss import flow_loss

    cfg = _small_tiny()
    net, _ = build_models(cfg, CPU, seed=0)
    calls: list[int] = []
    net.register_forward_pre_hook(lambda _m, _a, kw: calls.append(len(kw["history"])), with_kwargs=True)
    latents = torch.randn(6, 8, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # 2 latent frames
    tc = NetTrainConfig(batch=6, unit_layout=layout, groups_per_stage=2)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    rows, text = torch.arange(6) % 4, _RandomRows()
    losses = flow_loss(net, latents, rows, text, cfg, tc, g, phase=phase)  # type: ignore[arg-type]
    assert set(losses) == {"stage0", "stage1", "stage2", "loss"} and torch.isfinite(losses["loss"])
    per_stage = len(calls) // 3
    return [calls[i * per_stage : (i + 1) * per_stage] for i in range(3)]


def test_unit_layout_all_trains_every_unit_at_every_stage_with_fixed_shapes() -> None:
    # one group per latent frame; stage s gives group i unit (i + s) mod frames: the same calls every step
    assert _units_seen("all") == [[0, 1], [1, 0], [0, 1]]
    assert _units_seen("all") == _units_seen("all")


def test_unit_layout_cycle_trains_the_whole_batch_on_one_unit_per_stage_in_turn() -> None:
    # one network call per stage; step n gives stage s unit (n + s) mod frames: shapes repeat every 2 steps
    assert _units_seen("cycle", phase=0) == [[0], [1], [0]]
    assert _units_seen("cycle", phase=1) == [[1], [0], [1]]
    assert _units_seen("cycle", phase=2) == _units_seen("cycle", phase=0)


def test_unit_layout_random_draws_a_unit_per_group_and_stage() -> None:
    seen = _units_seen("random")
    assert [len(s) for s in seen] == [2, 2, 2]
    assert all(u in (0, 1) for s in seen for u in s)


def test_a_cuda_graph_step_needs_static_shapes_and_the_latent_set(tmp_path: Path) -> None:
    cfg = _small_tiny()
    net, vae = build_models(cfg, CPU, seed=0)
    tc = NetTrainConfig(steps=1, batch=2, unit_layout="all", cuda_graph=True)
    with pytest.raises(ValueError, match="latent set"):
        train_network(net, vae, _RandomRows(), cfg, tc, CPU, 0, LossLog(None, "net"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unit_layout"):
        NetTrainConfig(unit_layout="sometimes")  # type: ignore[arg-type]


def test_shape_pixels_weigh_more_in_the_vae_loss_and_the_weights_average_to_one() -> None:
    from model.train.train_vae import foreground_weights
    from model.train.world import ClipSpec, render_clips

    spec = ClipSpec("green", "circle", "still", "black")
    video = render_clips([spec], torch.Generator().manual_seed(0), frames=3, size=64)  # (1, 3, 3, 64, 64)
    w = foreground_weights(video, 20.0)  # (1, 1, 3, 64, 64)
    shape = (video - video[..., :1, :1]).abs().amax(dim=1, keepdim=True) > 0.1
    assert 0 < shape.float().mean() < 0.5
    torch.testing.assert_close(w.mean(dim=(2, 3, 4)), torch.ones(1, 1))
    assert torch.allclose(w[shape] / w[~shape].max(), torch.tensor(21.0))  # 1 + fg_weight against 1
    assert torch.equal(foreground_weights(video, 0.0), torch.ones_like(w))  # fg_weight 0: the plain mean


def test_ema_of_a_short_run_from_scratch_forgets_the_initial_weights() -> None:
    """Run 5 trained 621 steps from a fresh init and shipped the EMA (decay 0.998): without a warm-up that
    shadow still held 0.998**621 = 29% of the random initial weights (its flow loss on training clips was
    0.45-0.97 against the live network's logged 0.16-0.20). With the warm-up the shadow follows the run."""
    from model.train.train_step import EMA

    net = torch.nn.Linear(4, 4)
    ema = EMA(net, 0.998)
    with torch.no_grad():
        net.weight.add_(1.0)  # the run moves every weight by 1 and stays there
    for n in range(621):
        ema.set_update(n)
        ema.update(net)
    left = (net.weight - ema.shadow["weight"]).abs().max().item()  # the initial weights' share
    assert left < 1e-3, left
    assert ema.decay_at(10_000) == 0.998 and ema.decay_at(0) == pytest.approx(0.1)
    assert EMA(net, 0.998, warmup=False).decay_at(0) == 0.998


def test_train_step_warms_the_ema_up_with_the_step_count() -> None:
    """TrainStep sets the EMA's weight of every step before the update (the eager step here; the CUDA-graph
    replay reads the same device tensor): the shadow is the warm-up recursion over the live weights."""
    from model.train.train_step import TrainStep

    cfg = _small_tiny()
    net, _ = build_models(cfg, CPU, seed=0)
    latents = torch.randn(4, 8, 2, 8, 8, generator=torch.Generator().manual_seed(0))

    class Source:
        def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
            return latents[:n], torch.arange(n) % 4

    tc = NetTrainConfig(batch=4, unit_layout="all", lr=1e-3, warmup=1)
    g = torch.Generator().manual_seed(1)
    step = TrainStep(net, Source(), _RandomRows(), cfg, tc, CPU, g, torch.Generator())  # type: ignore[arg-type]
    want = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for n in range(3):
        step()
        w = 1.0 - min(0.998, (1 + n) / (10 + n))
        want = {k: v + w * (net.state_dict()[k] - v) for k, v in want.items()}
    for k, v in want.items():
        torch.testing.assert_close(step.ema.shadow[k], v.float(), msg=k)


def test_an_eager_cycle_step_trains_the_next_phase_each_step() -> None:
    from model.train.train_step import TrainStep

    cfg = _small_tiny()
    net, _ = build_models(cfg, CPU, seed=0)
    latents = torch.randn(4, 8, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # 2 latent frames
    calls: list[int] = []
    net.register_forward_pre_hook(lambda _m, _a, kw: calls.append(len(kw["history"])), with_kwargs=True)

    class Source:
        def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
            return latents[:n], torch.arange(n) % 4

    tc = NetTrainConfig(batch=4, unit_layout="cycle", lr=1e-3, warmup=1)
    g = torch.Generator().manual_seed(1)
    step = TrainStep(net, Source(), _RandomRows(), cfg, tc, CPU, g, torch.Generator(), phases=2)  # type: ignore[arg-type]
    for _ in range(3):
        losses, taken = step()
        assert taken == 1 and torch.isfinite(losses["loss"])
    assert calls == [0, 1, 0, 1, 0, 1, 0, 1, 0]  # one call per stage: units (n + s) mod 2
