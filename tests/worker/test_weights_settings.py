"""Settings reach the model: text-encoder paths, the weights folder, the random-weights rule, the config
check, and what the worker reports about its weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from m4v_core import Settings
from model.checkpoint_source import RandomWeightsRefusedError
from model.config import PRESETS, ModelConfig
from model.loading import save_checkpoint
from model.network import M4VNetwork
from model.text_encoder import T5ClipEncoder
from model.vae import CausalVAE
from tests.small_presets import small_768p
from tests.tiny_text_models import save_diffusers_layout, save_transformers_layout
from worker.heartbeat import WorkerState
from worker.pipeline import load_pipeline, weights_sha256


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelConfig]:
    cfg = small_768p()
    monkeypatch.setitem(PRESETS, cfg.name, cfg)
    yield cfg


def write_checkpoint(path: Path, cfg: ModelConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, cfg, {"network": M4VNetwork.for_preset(cfg), "vae": CausalVAE(cfg.vae)})
    return path


def load(settings: Settings):  # type: ignore[no-untyped-def]
    return load_pipeline(settings, "cpu", torch.float32)


def test_t5_and_clip_paths_from_settings_reach_the_text_encoder(small: ModelConfig, tmp_path: Path) -> None:
    t5, clip = save_transformers_layout(tmp_path / "text")
    ckpt = write_checkpoint(tmp_path / "ckpt", small)
    pipe = load(Settings(preset=small.name, weights=str(ckpt), t5_path=str(t5), clip_path=str(clip)))
    assert isinstance(pipe.text_encoder, T5ClipEncoder)
    assert (pipe.cfg.text.t5_path, pipe.cfg.text.clip_path) == (str(t5), str(clip))
    assert pipe.weights_source == str(ckpt)
    assert pipe.weights_sha256 == weights_sha256(ckpt) and len(pipe.weights_sha256) == 64


def test_text_stand_in_setting_reaches_the_pipeline(small: ModelConfig, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", small)
    pipe = load(Settings(preset=small.name, weights=str(ckpt), text_stand_in=True))
    assert type(pipe.text_encoder).__name__ == "RandomTextEncoder"


def test_a_weights_folder_in_the_diffusers_layout_supplies_the_text_encoders(
    small: ModelConfig, tmp_path: Path
) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", small)
    save_diffusers_layout(ckpt)
    pipe = load(Settings(preset=small.name, weights=str(ckpt)))
    assert isinstance(pipe.text_encoder, T5ClipEncoder)
    assert pipe.cfg.text.t5_path == pipe.cfg.text.clip_path == str(ckpt)
    # an explicit path overrides the folder's
    t5, _ = save_transformers_layout(tmp_path / "text", seed=1)
    pipe = load(Settings(preset=small.name, weights=str(ckpt), t5_path=str(t5)))
    assert (pipe.cfg.text.t5_path, pipe.cfg.text.clip_path) == (str(t5), str(ckpt))
    # the text-encoder folders are not part of the weights hash
    with_text = pipe.weights_sha256
    for sub in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        shutil.rmtree(ckpt / sub)
    assert with_text == weights_sha256(ckpt)
    (ckpt / "config.json").write_text((ckpt / "config.json").read_text() + " ")
    assert with_text != weights_sha256(ckpt)


def test_a_non_tiny_preset_without_weights_refuses_to_start() -> None:
    with pytest.raises(RandomWeightsRefusedError, match="attn-768p.*huggingface-cli download rain1011"):
        load(Settings(preset="attn-768p"))


def test_random_weights_opt_in_starts_and_is_reported(
    small: ModelConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        pipe = load(Settings(preset=small.name, allow_random_weights=True, text_stand_in=True))
    assert pipe.weights_source == "random" and pipe.weights_sha256 is None
    assert any("RANDOM weights" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    state = WorkerState(name="w", preset=small.name, device="cpu", weights=pipe.weights_source)
    beat = state.as_heartbeat()
    assert beat.random_weights is True and beat.weights == "random" and beat.weights_sha256 is None


def test_checkpoint_config_mismatch_names_the_field_and_both_values(
    small: ModelConfig, tmp_path: Path
) -> None:
    other = dataclasses.replace(small, vae=dataclasses.replace(small.vae, shift_factor=0.5))
    ckpt = write_checkpoint(tmp_path / "ckpt", other)
    with pytest.raises(ValueError, match=r"vae\.shift_factor: checkpoint 0\.5, preset -0\.2343;"):
        load(Settings(preset=small.name, weights=str(ckpt), text_stand_in=True))


def test_a_converted_checkpoint_whose_report_lists_a_random_vae_needs_the_opt_in(
    small: ModelConfig, tmp_path: Path
) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", small)
    (ckpt / "conversion_report.json").write_text(
        json.dumps({"newly_initialised": {"vae.encoder.conv_in.conv.weight": "no converted VAE"}})
    )
    with pytest.raises(RandomWeightsRefusedError, match=r"\['vae'\]"):
        load(Settings(preset=small.name, weights=str(ckpt), text_stand_in=True))
    pipe = load(Settings(preset=small.name, weights=str(ckpt), text_stand_in=True, allow_random_weights=True))
    assert pipe.weights_source == f"{ckpt} (RANDOM vae)"
    assert WorkerState(name="w", preset="p", device="cpu", weights=pipe.weights_source).random_weights
