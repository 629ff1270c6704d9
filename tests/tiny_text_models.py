"""Tiny random T5 and CLIP text models with offline WordLevel tokenizers, saved with save_pretrained, in the
two folder layouts the T5+CLIP encoder accepts (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "cat", "dog", "runs", "on", "the", "beach", "in", "snow", "red", "car", "city", "night"]
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]
T5_DIM, CLIP_DIM = 32, 24


def save_tokenizer(path: Path, *, clip: bool) -> None:
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


def _models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    vocab = len(SPECIALS) + len(WORDS)
    t5 = T5EncoderModel(
        T5Config(vocab_size=vocab, d_model=T5_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=0)
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=CLIP_DIM,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=3,
            eos_token_id=1,
        )
    )
    return t5, clip


def save_transformers_layout(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """root/t5 and root/clip, each a transformers directory with its tokenizer inside."""
    t5, clip = _models(seed)
    for model, name, clip_style in ((t5, "t5", False), (clip, "clip", True)):
        model.save_pretrained(str(root / name))
        save_tokenizer(root / name, clip=clip_style)
    return root / "t5", root / "clip"


def save_diffusers_layout(root: Path, seed: int = 0) -> Path:
    """root/text_encoder + root/tokenizer (CLIP), root/text_encoder_2 + root/tokenizer_2 (T5), as in
    PyramidFlow's published folder."""
    t5, clip = _models(seed)
    clip.save_pretrained(str(root / "text_encoder"))
    save_tokenizer(root / "tokenizer", clip=True)
    t5.save_pretrained(str(root / "text_encoder_2"))
    save_tokenizer(root / "tokenizer_2", clip=False)
    return root
