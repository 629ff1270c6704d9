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
)

WORDS = ["a", "cat", "dog", "runs", "on", "the", "beach", "in", "snow", "red", "car", "city", "night"]
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]


def _save_tokenizer(path: Path, *, clip: bool) -> None:
    """A WordLevel tokenizer built offline; T5 style appends </s>, CLIP style wraps in <s> ... </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = "<s> $A </s>" if clip else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )
    fast.save_pretrained(str(path))


@pytest.fixture(scope="module")
def t5_clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("text")
    torch.manual_seed(0)
    vocab = len(SPECIALS) + len(WORDS)
    t5 = T5EncoderModel(
        T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=0)
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=3,
            eos_token_id=1,
        )
    )
    for model, name, clip_style in ((t5, "t5", False), (clip, "clip", True)):
        model.save_pretrained(str(root / name))
        _save_tokenizer(root / name, clip=clip_style)
    return root / "t5", root / "clip"


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
