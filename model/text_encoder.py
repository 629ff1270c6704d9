"""Text encoders behind one interface: encode(prompts) -> TextEmbeddings (tokens, mask, pooled)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
