"""Checkpoint save/load round trips with small real modules (built on meta, filled by load_weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from model.config import PRESETS
from model.loading import INDEX_NAME, load_config, load_weights, save_checkpoint
from model.vae import CausalVAE

CFG = PRESETS["tiny"]


class Mixer(nn.Module):
    """A bf16 module with Mamba2-style fp32-policy parameters and a persistent buffer."""

    def __init__(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16, device=device, dtype=dtype)
        self.A_log = nn.Parameter(torch.empty(4, device=device, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(4, device=device, dtype=torch.float32))
        self.register_buffer("steps", torch.zeros(2, dtype=torch.int64, device=device))


def _filled(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for b in module.buffers():
            b.copy_(torch.arange(b.numel()).reshape(b.shape) + seed)
    return module


def _modules(dtype: torch.dtype | None = None, device: str | None = None) -> dict[str, nn.Module]:
    return {"network": Mixer(dtype, device), "head": nn.Linear(16, 3, device=device, dtype=dtype)}


def _assert_same(a: dict[str, nn.Module], b: dict[str, nn.Module]) -> None:
    for name in a:
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k].to(sa[k].dtype), sa[k], msg=f"{name}.{k}")


@pytest.mark.parametrize("shard_bytes", [2**30, 200], ids=["one-file", "sharded"])
def test_round_trip_into_meta_modules(tmp_path: Path, shard_bytes: int) -> None:
    saved = {k: _filled(m, i) for i, (k, m) in enumerate(_modules().items())}
    save_checkpoint(tmp_path / "ckpt", CFG, saved, max_shard_bytes=shard_bytes)
    assert (tmp_path / "ckpt" / INDEX_NAME).exists() == (shard_bytes == 200)
    assert load_config(tmp_path / "ckpt") == CFG
    loaded = _modules(device="meta")
    load_weights(tmp_path / "ckpt", loaded, device="cpu")
    assert not any(t.is_meta for m in loaded.values() for t in m.state_dict().values())
    _assert_same(saved, loaded)


def test_sharded_index_maps_every_key(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CFG, {k: _filled(m, 0) for k, m in _modules().items()}, max_shard_bytes=200)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "network.A_log" in index["weight_map"] and "head.weight" in index["weight_map"]


def test_bf16_load_keeps_fp32_policy_params_fp32(tmp_path: Path) -> None:
    saved = {k: _filled(m, 1) for k, m in _modules().items()}
    save_checkpoint(tmp_path, CFG, saved)
    loaded = _modules(dtype=torch.bfloat16, device="meta")  # A_log/D are created fp32 inside a bf16 module
    load_weights(tmp_path, loaded, device="cpu", dtype=torch.bfloat16)
    mixer = loaded["network"]
    assert isinstance(mixer, Mixer)
    assert mixer.proj.weight.dtype == torch.bfloat16 and loaded["head"].weight.dtype == torch.bfloat16
    assert mixer.A_log.dtype == torch.float32 and mixer.D.dtype == torch.float32
    torch.testing.assert_close(mixer.A_log, saved["network"].A_log, rtol=0, atol=0)
    assert mixer.steps.dtype == torch.int64
    assert isinstance(mixer.A_log, nn.Parameter)


def test_fp32_built_module_is_cast_to_requested_dtype(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CFG, {k: _filled(m, 2) for k, m in _modules().items()})
    loaded = _modules(device="meta")  # everything fp32: nothing marks a tensor as fp32-policy
    load_weights(tmp_path, loaded, device="cpu", dtype=torch.float16)
    assert {p.dtype for m in loaded.values() for p in m.parameters()} == {torch.float16}


def test_single_safetensors_file_carries_its_config(tmp_path: Path) -> None:
    saved = {k: _filled(m, 3) for k, m in _modules().items()}
    save_checkpoint(tmp_path / "tiny.safetensors", CFG, saved)
    assert load_config(tmp_path / "tiny.safetensors") == CFG
    loaded = _modules(device="meta")
    load_weights(tmp_path / "tiny.safetensors", loaded, device="cpu")
    _assert_same(saved, loaded)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CFG, {"network": _filled(Mixer(), 0)})
    with pytest.raises(ValueError, match=r"missing keys \['head.bias', 'head.weight'\]"):
        load_weights(tmp_path, _modules(device="meta"), device="cpu")
    with pytest.raises(ValueError, match=r"unexpected keys \['network.A_log'"):
        load_weights(tmp_path, {"network": nn.Linear(8, 16, device="meta")}, device="cpu")


def test_shape_mismatch_is_a_value_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CFG, {"head": nn.Linear(16, 3)})
    with pytest.raises(ValueError, match="head.weight"):
        load_weights(tmp_path, {"head": nn.Linear(16, 4, device="meta")}, device="cpu")


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CFG, {"head": nn.Linear(2, 2)})
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_config(tmp_path)


@torch.no_grad()
def test_tiny_vae_round_trip_decodes_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = CausalVAE(CFG.vae).eval()
    save_checkpoint(tmp_path, CFG, {"vae": vae})
    loaded = CausalVAE(load_config(tmp_path).vae, device="meta")
    load_weights(tmp_path, {"vae": loaded}, device="cpu")
    z = torch.randn(1, 8, 2, 8, 8)
    torch.testing.assert_close(loaded.eval().decode(z), vae.decode(z), rtol=0, atol=0)
