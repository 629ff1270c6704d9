"""Checkpoints: one directory (or one .safetensors file) holding the preset config and every module's weights.

Directory layout:
    config.json                      {"format_version": 1, "model": ModelConfig.to_dict()}
    model.safetensors                all tensors, keys prefixed by module name ("network.", "vae.", ...)
  or, above max_shard_bytes:
    model-00001-of-0000n.safetensors ... + model.safetensors.index.json {"metadata", "weight_map"}
Single-file alternative: name.safetensors with the same config JSON in its metadata header ("m4v_config").

Loading is meant for modules built on the meta device: tensors are read straight onto `device` and put in
place with load_state_dict(assign=True). s3:// URLs are the worker's business (it downloads, then calls this).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from model.config import ModelConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
META_CONFIG = "m4v_config"
DEFAULT_SHARD_BYTES = 4 * 2**30


def _is_single_file(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _gather(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Prefixed CPU tensors; storage shared by two keys (tied weights) is cloned: safetensors refuses it."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, module in modules.items():
        for key, t in module.state_dict().items():
            if t.is_meta:
                raise ValueError(f"{name}.{key} is on the meta device: nothing to save")
            t = t.detach().to("cpu").contiguous()
            ident = (t.untyped_storage().data_ptr(), t.storage_offset())
            out[f"{name}.{key}"] = t.clone() if ident in seen else t
            seen.add(ident)
    return out


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    return shards


def _config_json(cfg: ModelConfig) -> str:
    return json.dumps({"format_version": FORMAT_VERSION, "model": cfg.to_dict()}, indent=2)


def save_checkpoint(
    path: str | Path,
    cfg: ModelConfig,
    modules: dict[str, nn.Module],
    *,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> None:
    """Write cfg and every module's state dict (keys "<name>.<param>") to a directory or .safetensors file."""
    path = Path(path)
    tensors = _gather(modules)
    meta = {"format": "pt", "m4v_format_version": str(FORMAT_VERSION)}
    if _is_single_file(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={**meta, META_CONFIG: _config_json(cfg)})
        return
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(_config_json(cfg))
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(tensors, str(path / WEIGHTS_NAME), metadata=meta)
        return
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata=meta)
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total, "format_version": FORMAT_VERSION}, "weight_map": weight_map}
    (path / INDEX_NAME).write_text(json.dumps(index, indent=2))
    logger.info("saved checkpoint %s: %d tensors in %d shards", path, len(tensors), len(shards))


def _parse_config(text: str, where: Path) -> ModelConfig:
    data: dict[str, Any] = json.loads(text)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: checkpoint format_version {version!r}, this code reads {FORMAT_VERSION}")
    return ModelConfig.from_dict(data["model"])


def load_config(path: str | Path) -> ModelConfig:
    """The ModelConfig stored with a checkpoint (directory or single .safetensors file)."""
    path = Path(path)
    if _is_single_file(path):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if META_CONFIG not in meta:
            raise ValueError(f"{path}: no {META_CONFIG!r} entry in the safetensors metadata")
        return _parse_config(meta[META_CONFIG], path)
    return _parse_config((path / CONFIG_NAME).read_text(), path / CONFIG_NAME)


def _key_files(path: Path) -> dict[str, Path]:
    """Every stored key -> the file holding it."""
    if _is_single_file(path):
        files = [path]
    elif (path / INDEX_NAME).exists():
        weight_map: dict[str, str] = json.loads((path / INDEX_NAME).read_text())["weight_map"]
        return {k: path / v for k, v in weight_map.items()}
    else:
        files = [path / WEIGHTS_NAME]
    out: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            out.update(dict.fromkeys(f.keys(), file))
    return out


def _check_keys(stored: set[str], expected: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(set(expected) - stored), sorted(stored - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the modules: {len(missing)} missing keys {missing[:20]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:20]}"
        )


def _target_dtype(
    saved: torch.dtype, current: torch.dtype, dtype: torch.dtype | None, keeps_fp32: bool
) -> torch.dtype:
    """Floating tensors go to `dtype` (None: the module's own dtype), except fp32-policy tensors: in a module
    built in low precision, a tensor created fp32 (Mamba2 A_log, dt_bias, D; norms) stays fp32."""
    if not saved.is_floating_point:
        return saved
    if dtype is None or (keeps_fp32 and current == torch.float32):
        return current
    return dtype


def _read(
    key_files: dict[str, Path], keys: list[str], device: torch.device | str
) -> Iterator[tuple[str, torch.Tensor]]:
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        by_file.setdefault(key_files[key], []).append(key)
    for file, file_keys in by_file.items():
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for key in file_keys:
                yield key, f.get_tensor(key)


def load_weights(
    path: str | Path,
    modules: dict[str, nn.Module],
    *,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> None:
    """Fill `modules` (typically built on meta) from a checkpoint. Missing/unexpected keys -> ValueError."""
    key_files = _key_files(Path(path))
    expected = {f"{n}.{k}": t for n, m in modules.items() for k, t in m.state_dict(keep_vars=True).items()}
    _check_keys(set(key_files), expected)
    for name, module in modules.items():
        current = module.state_dict(keep_vars=True)
        floats = {t.dtype for t in current.values() if t.is_floating_point()}
        keeps_fp32 = bool(floats - {torch.float32})  # low-precision module with deliberate fp32 tensors
        state: dict[str, torch.Tensor] = {}
        for full_key, t in _read(key_files, [f"{name}.{k}" for k in current], device):
            key = full_key[len(name) + 1 :]
            if t.shape != current[key].shape:
                raise ValueError(
                    f"{full_key}: checkpoint shape {tuple(t.shape)} != module {tuple(current[key].shape)}"
                )
            state[key] = t.to(_target_dtype(t.dtype, current[key].dtype, dtype, keeps_fp32))
        module.load_state_dict(state, strict=True, assign=True)
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            logger.warning(
                "%s: tensors still on meta after loading (non-persistent buffers?): %s", name, left
            )
