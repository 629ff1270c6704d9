"""The folder layout of PyramidFlow-miniFLUX as published (rain1011/pyramid-flow-miniflux on the hub).

diffusion_transformer_768p/   config.json + *.safetensors   the 768p DiT (PyramidFluxTransformer)
causal_video_vae/             config.json + *.safetensors   the causal video VAE (CausalVideoVAE)
text_encoder/ + tokenizer/                                  CLIP-L (pooled prompt embedding)
text_encoder_2/ + tokenizer_2/                              T5-XXL encoder (token embeddings)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

DIT_DIR = "diffusion_transformer_768p"
VAE_DIR = "causal_video_vae"


def is_pyramidflow_folder(path: Path) -> bool:
    return path.is_dir() and (path / DIT_DIR).is_dir()


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no config.json (not a PyramidFlow model folder?)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _variant(file: Path) -> str:
    """diffusers names a dtype variant "<name>.<variant>.safetensors" (e.g. ...model.bf16.safetensors)."""
    parts = file.name.split(".")
    return parts[-2] if len(parts) > 2 else ""


def weight_files(folder: Path) -> list[Path]:
    """The *.safetensors files of one variant: the plain one if present, else the first variant by name (a
    folder may hold the same weights twice, e.g. fp32 and bf16)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors files")
    variants = sorted({_variant(f) for f in files})
    return [f for f in files if _variant(f) == variants[0]]


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one variant's *.safetensors files in `folder` (sharded or not); a key twice is an
    error."""
    files = weight_files(folder)
    out: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if key in out:
                    raise ValueError(f"{folder}: tensor {key!r} stored twice (in {file.name} too)")
                out[key] = f.get_tensor(key)
    return out
