"""Frozen MiniLM embeddings of every caption, computed once (CPU) and stored as fp16 safetensors.

The GPU box has no MiniLM package, so training and evaluation there read this file. Tokens are stored
trimmed to the longest caption (positions past a caption's mask are zero anyway) and padded back to the
preset's max_tokens on load, so the network sees exactly what MiniLMEncoder.encode would give it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.text_encoder import TextEmbeddings, TextEncoder

log = logging.getLogger(__name__)


def build_cache(encoder: TextEncoder, captions: list[str], path: Path, batch: int = 256) -> None:
    """Encode unique captions (the empty prompt always included, row 0) and save them to ``path``."""
    unique = list(dict.fromkeys(["", *captions]))
    parts = [encoder.encode(unique[i : i + batch]) for i in range(0, len(unique), batch)]
    emb = TextEmbeddings.cat(parts)
    length = int(emb.mask.sum(dim=1).max())
    tensors = {
        "tokens": emb.tokens[:, :length].to(torch.float16).contiguous(),  # (N, Lmax, D)
        "mask": emb.mask[:, :length].contiguous(),  # (N, Lmax)
        "pooled": emb.pooled.to(torch.float16).contiguous(),  # (N, D)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors, str(path), metadata={"captions": json.dumps(unique), "max_tokens": str(encoder.max_tokens)}
    )
    log.info("text cache %s: %d captions, %d tokens each", path, len(unique), length)


class TextCache:
    """Caption -> TextEmbeddings rows, from a build_cache file, on one device."""

    def __init__(self, path: Path, device: torch.device | str = "cpu") -> None:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata()
            tokens, mask, pooled = (f.get_tensor(k) for k in ("tokens", "mask", "pooled"))
        max_tokens = int(meta["max_tokens"])
        pad = max_tokens - tokens.shape[1]
        self.tokens = torch.nn.functional.pad(tokens.float(), (0, 0, 0, pad)).to(device)  # (N, L, D)
        self.mask = torch.nn.functional.pad(mask, (0, pad)).to(device)  # (N, L)
        self.pooled = pooled.float().to(device)  # (N, D)
        self.index = {c: i for i, c in enumerate(json.loads(meta["captions"]))}
        self.max_tokens = max_tokens
        self.token_dim = self.pooled_dim = tokens.shape[-1]

    def rows(self, idx: torch.Tensor) -> TextEmbeddings:
        return TextEmbeddings(tokens=self.tokens[idx], mask=self.mask[idx], pooled=self.pooled[idx])

    def ids(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in captions if c not in self.index]
        if missing:
            raise KeyError(f"captions not in the text cache: {missing[:3]}")
        return torch.tensor([self.index[c] for c in captions], device=self.tokens.device)

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        """TextEncoder protocol, for cached prompts only (VideoPipeline on a box without MiniLM)."""
        return self.rows(self.ids(prompts))
