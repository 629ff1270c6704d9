"""The pre-encoded latent set: file round trip, split check, reuse, and network training from it (CPU)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from model.config import get_preset
from model.text_encoder import RandomTextEncoder
from model.train.captions import train_captions, train_specs
from model.train.common import LossLog, clip_batch
from model.train.latent_data import (
    LatentSet,
    build_latent_set,
    encode_latents,
    file_sha256,
    load_latent_set,
    save_latent_set,
)
from model.train.run import build_models
from model.train.run import main as run_main
from model.train.text_cache import TextCache, build_cache
from model.train.train_network import (
    CaptionSampler,
    LatentBatches,
    NetTrainConfig,
    flow_loss,
    train_network,
)

CPU = torch.device("cpu")
TINY_WEIGHTS = Path(__file__).parents[2] / "model" / "weights" / "tiny.safetensors"


def _small_tiny():  # the tiny preset's modules on 32x32, 5-frame clips: latents (8, 2, 8, 8)
    return dataclasses.replace(get_preset("tiny"), resolutions=((32, 32),), default_frames=5)


def test_latent_set_round_trip_keeps_shapes_dtype_spec_indices_and_metadata(tmp_path: Path) -> None:
    cfg = _small_tiny()
    _, vae = build_models(cfg, CPU, seed=0)
    data = build_latent_set(vae, cfg, clips=5, seed=3, device=CPU, vae_sha256="abc", batch=2)
    save_latent_set(data, tmp_path / "lat.safetensors")
    back = load_latent_set(tmp_path / "lat.safetensors")
    assert back.latents.shape == (5, 8, 2, 8, 8) and back.latents.dtype == torch.float16
    assert back.spec_index.tolist() == [0, 1, 2, 3, 4]  # clip i shows train_specs()[i % S]
    torch.testing.assert_close(back.latents, data.latents)
    assert {k: back.meta[k] for k in ("preset", "clips", "requested", "seed", "vae_sha256")} == {
        "preset": "tiny",
        "clips": "5",
        "requested": "5",
        "seed": "3",
        "vae_sha256": "abc",
    }
    assert json.loads(back.meta["latent_shape"]) == [8, 2, 8, 8]
    # The first batch is the encoding of those specs' clips rendered from the same seed.
    specs = train_specs()[:2]
    want = encode_latents(vae, clip_batch(specs, cfg, torch.Generator().manual_seed(3), CPU), CPU)
    torch.testing.assert_close(back.latents[:2].float(), want, atol=2e-3, rtol=2e-3)


def test_latent_set_from_another_split_is_refused(tmp_path: Path) -> None:
    data = LatentSet(torch.zeros(1, 8, 2, 8, 8, dtype=torch.float16), torch.zeros(1, dtype=torch.int64), {})
    save_latent_set(dataclasses.replace(data, meta={"specs": "[]"}), tmp_path / "old.safetensors")
    with pytest.raises(ValueError, match="differs from train_specs"):
        load_latent_set(tmp_path / "old.safetensors")


def test_latents_phase_records_the_vae_hash_and_reuses_a_matching_set(tmp_path: Path) -> None:
    path = tmp_path / "lat.safetensors"
    argv = ["latents", "--vae-in", str(TINY_WEIGHTS), "--latents", str(path), "--latent-clips", "1"]
    run_main([*argv, "--out", str(tmp_path / "out"), "--device", "cpu"])
    meta = json.loads((tmp_path / "out" / "latents_meta.json").read_text())
    assert meta["vae_sha256"] == file_sha256(TINY_WEIGHTS) and meta["clips"] == "1"
    first = path.stat().st_mtime_ns
    run_main([*argv, "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert path.stat().st_mtime_ns == first  # not rebuilt
    run_main([*argv[:-1], "2", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert load_latent_set(path).latents.shape[0] == 2  # another request: rebuilt


def test_latent_batches_draw_clips_of_the_set_with_a_caption_of_their_spec(tmp_path: Path) -> None:
    cache_path = tmp_path / "text.safetensors"
    build_cache(RandomTextEncoder(384, 384, 32), [c for _, c in train_captions(2)], cache_path)
    captions = CaptionSampler(TextCache(cache_path), 2)
    # (3, 8, 2, 4, 4): every value of clip i is i
    latents = torch.arange(3, dtype=torch.float16)[:, None, None, None, None].expand(3, 8, 2, 4, 4)
    data = LatentSet(latents.contiguous(), torch.tensor([7, 0, 300]), {})
    batches = LatentBatches(data, captions, CPU, torch.Generator().manual_seed(0))
    x, rows = batches.next(64, dropout=0.0)
    assert x.dtype == torch.float32 and x.shape == (64, 8, 2, 4, 4)
    clip = x[:, 0, 0, 0, 0].long()  # (64,) which clip each example is
    assert set(clip.tolist()) == {0, 1, 2}
    table = captions.row_table()  # (S, 2)
    for i, row in zip(clip.tolist(), rows.tolist(), strict=True):
        assert row in table[data.spec_index[i]].tolist()
    assert batches.next(8, dropout=1.0)[1].tolist() == [0] * 8  # all dropped to the empty prompt


@pytest.mark.slow
def test_training_from_a_latent_set_lowers_the_loss_on_its_clips(tmp_path: Path) -> None:
    cfg = _small_tiny()
    net, vae = build_models(cfg, CPU, seed=0)
    data = build_latent_set(vae, cfg, clips=2, seed=0, device=CPU, vae_sha256="x")
    cache_path = tmp_path / "text.safetensors"
    build_cache(RandomTextEncoder(384, 384, 32), [c for _, c in train_captions(1)], cache_path)
    cache = TextCache(cache_path)
    tc = NetTrainConfig(steps=8, batch=2, groups_per_stage=1, lr=3e-3, warmup=1, log_every=4)
    tc = dataclasses.replace(tc, text_dropout=0.0, captions_per_spec=1)
    rows = CaptionSampler(cache, 1).row_table()[data.spec_index, 0]  # (2,)

    def fixed_loss() -> float:  # the same noise, sigmas and units every time
        with torch.no_grad():
            g = torch.Generator().manual_seed(123)
            return flow_loss(net, data.latents.float(), rows, cache, cfg, tc, g)["loss"].item()

    before = fixed_loss()
    encoder_calls: list[int] = []
    vae.encoder.register_forward_pre_hook(lambda *_: encoder_calls.append(1))
    log_path = tmp_path / "losses.jsonl"
    steps, _ = train_network(net, vae, cache, cfg, tc, CPU, 0, LossLog(log_path, "net"), data)
    assert steps == 8 and not encoder_calls  # batches came from the set, nothing was rendered and encoded
    assert fixed_loss() < 0.85 * before
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 4, 8]
    assert all(r["steps_per_s"] > 0 for r in logged)
