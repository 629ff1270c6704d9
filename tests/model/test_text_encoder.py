"""Text encoders: tiny random T5/CLIP saved to disk and loaded back, the packaged MiniLM, the stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.config import PRESETS, TextConfig
from model.text_encoder import (
    MiniLMEncoder,
    RandomTextEncoder,
    T5ClipEncoder,
    TextEmbeddings,
    build_text_encoder,
    locate_text_model,
)
from tests.tiny_text_models import save_diffusers_layout, save_transformers_layout


@pytest.fixture(scope="module")
def t5_clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return save_transformers_layout(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder(max_tokens=32, device="cpu", dtype=torch.float32)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=-1))


def test_t5_clip_round_trip_from_local_dirs(t5_clip_dirs: tuple[Path, Path]) -> None:
    t5_dir, clip_dir = t5_clip_dirs
    enc = T5ClipEncoder(t5_dir, clip_dir, max_tokens=8, device="cpu", dtype=torch.float32)
    assert (enc.token_dim, enc.pooled_dim, enc.max_tokens) == (32, 24, 8)
    emb = enc.encode(["a red car in the city", "dog", ""])
    assert emb.tokens.shape == (3, 8, 32) and emb.pooled.shape == (3, 24)
    assert emb.mask.sum(dim=1).tolist() == [7, 2, 1]  # words + </s>; the empty prompt keeps </s>
    assert torch.all(emb.tokens[~emb.mask] == 0)
    assert not torch.allclose(emb.pooled[0], emb.pooled[1])
    again = enc.encode(["a red car in the city"])
    torch.testing.assert_close(again.tokens[0], emb.tokens[0], rtol=1e-5, atol=1e-5)


def test_build_text_encoder_t5_clip_checks_dims_and_paths(t5_clip_dirs: tuple[Path, Path]) -> None:
    t5_dir, clip_dir = t5_clip_dirs
    cfg = TextConfig(token_dim=32, pooled_dim=24, max_tokens=8, t5_path=str(t5_dir), clip_path=str(clip_dir))
    enc = build_text_encoder(cfg, device="cpu", dtype=torch.float32)
    assert isinstance(enc, T5ClipEncoder)
    with pytest.raises(ValueError, match="preset expects 4096/768"):
        build_text_encoder(
            TextConfig(t5_path=str(t5_dir), clip_path=str(clip_dir)), device="cpu", dtype=torch.float32
        )


def test_build_text_encoder_t5_clip_without_paths_names_the_settings() -> None:
    with pytest.raises(ValueError, match="M4V_T5_PATH and M4V_CLIP_PATH"):
        build_text_encoder(TextConfig(), device="cpu", dtype=torch.float32)


def test_build_text_encoder_stand_in_needs_no_paths() -> None:
    enc = build_text_encoder(TextConfig(), device="cpu", dtype=torch.bfloat16, stand_in=True)
    assert isinstance(enc, RandomTextEncoder)
    emb = enc.encode(["x"])
    assert emb.tokens.shape == (1, 128, 4096) and emb.pooled.shape == (1, 768)
    assert emb.tokens.dtype == torch.bfloat16


def test_minilm_is_the_tiny_presets_encoder(minilm: MiniLMEncoder) -> None:
    enc = build_text_encoder(PRESETS["tiny"].text, device="cpu", dtype=torch.float32)
    assert isinstance(enc, MiniLMEncoder)
    assert (enc.token_dim, enc.pooled_dim, enc.max_tokens) == (384, 384, 32)


def test_minilm_mask_and_shapes(minilm: MiniLMEncoder) -> None:
    emb = minilm.encode(["a cat", "", "word " * 100])
    assert emb.tokens.shape == (3, 32, 384) and emb.pooled.shape == (3, 384)
    # [CLS] a cat [SEP] = 4; empty = [CLS] [SEP]; long prompt truncated to max_tokens
    assert emb.mask.sum(dim=1).tolist() == [4, 2, 32]
    assert torch.all(emb.tokens[~emb.mask] == 0)
    mean = emb.tokens[0, :4].mean(dim=0)
    torch.testing.assert_close(emb.pooled[0], mean)


def test_minilm_paraphrases_are_closer_than_unrelated_prompts(minilm: MiniLMEncoder) -> None:
    emb = minilm.encode(
        ["a cat running on the beach", "a kitten runs along the seashore", "stock prices fell today"]
    )
    para, other = _cos(emb.pooled[0], emb.pooled[1]), _cos(emb.pooled[0], emb.pooled[2])
    assert para > 0.5 > other + 0.3
    assert not torch.allclose(emb.tokens[0], emb.tokens[1])


def test_random_stand_in_is_deterministic_per_prompt() -> None:
    enc = RandomTextEncoder(token_dim=16, pooled_dim=8, max_tokens=6, seed=1)
    a, b = enc.encode(["red car", "dog", ""]), enc.encode(["red car"])
    torch.testing.assert_close(a.tokens[0], b.tokens[0])
    assert not torch.allclose(a.pooled[0], a.pooled[1])
    assert a.mask.sum(dim=1).tolist() == [3, 2, 1]
    other_seed = RandomTextEncoder(token_dim=16, pooled_dim=8, max_tokens=6, seed=2).encode(["red car"])
    assert not torch.allclose(other_seed.pooled, b.pooled)


def test_cfg_batch_concatenates_cond_and_uncond(minilm: MiniLMEncoder) -> None:
    both = TextEmbeddings.cat([minilm.encode(["a cat"]), minilm.encode([""])])
    assert both.tokens.shape == (2, 32, 384) and both.mask.shape == (2, 32)


def test_t5_clip_from_the_diffusers_layout_equals_the_transformers_layout(
    t5_clip_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    root = save_diffusers_layout(tmp_path)  # same seed: the same weights in PyramidFlow's layout
    prompts = ["a red car in the city", ""]
    ref = T5ClipEncoder(*t5_clip_dirs, max_tokens=8, device="cpu", dtype=torch.float32).encode(prompts)
    for t5, clip in ((root, root), (root / "text_encoder_2", root / "text_encoder")):
        got = T5ClipEncoder(t5, clip, max_tokens=8, device="cpu", dtype=torch.float32).encode(prompts)
        torch.testing.assert_close(got.tokens, ref.tokens)
        torch.testing.assert_close(got.pooled, ref.pooled)
        assert torch.equal(got.mask, ref.mask)


def test_locate_text_model_picks_the_right_folders(tmp_path: Path) -> None:
    root = save_diffusers_layout(tmp_path)
    assert locate_text_model(root, "t5") == (root / "text_encoder_2", root / "tokenizer_2")
    assert locate_text_model(root, "clip") == (root / "text_encoder", root / "tokenizer")
    assert locate_text_model(root / "text_encoder", "clip") == (root / "text_encoder", root / "tokenizer")


def test_locate_text_model_names_the_setting_when_the_tokenizer_is_missing(tmp_path: Path) -> None:
    root = save_diffusers_layout(tmp_path)
    for f in (root / "tokenizer_2").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="M4V_T5_PATH.*no tokenizer"):
        locate_text_model(root, "t5")
    with pytest.raises(FileNotFoundError, match="M4V_CLIP_PATH .*is not a directory"):
        locate_text_model(root / "nope", "clip")
