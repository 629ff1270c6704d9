"""Pre-encoded training set for the network phase: world clips rendered once and encoded once.

Rendering and VAE-encoding every network batch on the fly dominated step time (2.2 s/step at batch 1024 on an
H200). Here N clips are rendered from the training specs (clip i shows ``train_specs()[i % S]`` with its own
seeded geometry: position, travel, size, so every spec gets ~N/S different clips), encoded once by the frozen
VAE (posterior mean, bf16 autocast on CUDA) and stored in one safetensors file:

    latents     (N, C, T, h, w) fp16
    spec_index  (N,) int64, an index into model.train.captions.train_specs()

with string metadata: preset, clips (stored), requested, seed, vae_sha256 (of the --vae-in file), frames,
size, latent_shape and specs (the spec list as JSON, so a changed train/held-out split is caught on load).

No flip or time-reverse augmentation: the world renders any spec with fresh geometry at no cost, so mirrored
clips add nothing new, and mirroring a training triple can produce a held-out one (a red circle moving left
becomes one moving right), which would leak the evaluation split into training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import ModelConfig
from model.train.captions import train_specs
from model.train.common import Budget, autocast, clip_batch
from model.train.world import ClipSpec
from model.vae import CausalVAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentSet:
    latents: torch.Tensor  # (N, C, T, h, w) fp16
    spec_index: torch.Tensor  # (N,) int64 into train_specs()
    meta: dict[str, str]

    def __len__(self) -> int:
        return self.latents.shape[0]


@torch.no_grad()
def encode_latents(
    vae: CausalVAE, video: torch.Tensor, device: torch.device, chunk: int = 128
) -> torch.Tensor:
    """Posterior means (B, C, T, h, w), encoded ``chunk`` clips at a time (encoder activations are large)."""
    with autocast(device):
        return torch.cat([vae.encode(v).float() for v in video.split(chunk)])


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def specs_json(specs: list[ClipSpec]) -> str:
    return json.dumps([[s.color, s.shape, s.motion, s.background] for s in specs])


def set_meta(cfg: ModelConfig, requested: int, seed: int, vae_sha256: str) -> dict[str, str]:
    """What a set built with these arguments records; a stored set that agrees on all of it is reused."""
    w, _ = cfg.default_resolution
    return {
        "preset": cfg.name,
        "requested": str(requested),
        "seed": str(seed),
        "vae_sha256": vae_sha256,
        "frames": str(cfg.default_frames),
        "size": str(w),
        "specs": specs_json(train_specs()),
    }


def build_latent_set(
    vae: CausalVAE,
    cfg: ModelConfig,
    clips: int,
    seed: int,
    device: torch.device,
    vae_sha256: str,
    batch: int = 512,
    max_seconds: float = 1e9,
) -> LatentSet:
    """Render and encode ``clips`` clips, ``batch`` at a time; stops early (fewer clips) after max_seconds."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    specs, g = train_specs(), torch.Generator().manual_seed(seed)
    budget, done = Budget(math.ceil(clips / batch), max_seconds), 0
    parts: list[torch.Tensor] = []  # (b, C, T, h, w) fp16 each
    while done < clips and not budget.done(len(parts)):
        index = torch.arange(done, min(done + batch, clips)) % len(specs)  # (b,)
        video = clip_batch([specs[i] for i in index.tolist()], cfg, g, device)  # (b, 3, F, H, W)
        parts.append(encode_latents(vae, video, device).half())  # (b, C, T, h, w)
        done += len(index)
    if done < clips:
        log.warning("latent set: time budget hit after %d of %d clips", done, clips)
    latents = torch.cat(parts)
    meta = set_meta(cfg, clips, seed, vae_sha256)
    meta.update(clips=str(done), latent_shape=json.dumps(list(latents.shape[1:])))
    return LatentSet(latents, torch.arange(done) % len(specs), meta)


def save_latent_set(data: LatentSet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"latents": data.latents.cpu().contiguous(), "spec_index": data.spec_index.cpu().contiguous()}
    save_file(tensors, str(path), metadata=data.meta)
    log.info("latent set %s: %d clips, %.1f MiB", path, len(data), path.stat().st_size / 2**20)


def read_meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def reusable(path: Path, want: dict[str, str]) -> bool:
    if not path.is_file():
        return False
    have = read_meta(path)
    return all(have.get(k) == v for k, v in want.items())


def load_latent_set(path: Path, device: torch.device | str = "cpu") -> LatentSet:
    """The stored set on ``device``; refuses a file written for a different train/held-out split."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        latents, spec_index = f.get_tensor("latents"), f.get_tensor("spec_index")
    if meta.get("specs") != specs_json(train_specs()):
        raise ValueError(f"{path}: its spec list differs from train_specs(); rebuild it (phase latents)")
    if latents.dtype != torch.float16 or latents.shape[0] != spec_index.shape[0]:
        got = f"latents {latents.dtype} {tuple(latents.shape)}, spec_index {tuple(spec_index.shape)}"
        raise ValueError(f"{path}: want fp16 latents, one spec index per clip; got {got}")
    return LatentSet(latents.to(device), spec_index.to(device), meta)
