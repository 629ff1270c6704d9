"""A few CPU steps of each training phase: finite losses, a JSON-lines log, a checkpoint that loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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
