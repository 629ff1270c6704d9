"""PyramidFlow-miniFLUX's DiT (pyramid_dit/flux_modules: PyramidFluxTransformer) onto our M4VNetwork.

Both are FLUX: the differences are names, fused projections and two orderings.
- to_q/to_k/to_v (and add_*_proj for text) are separate Linears there; our qkv is one Linear, rows [q; k; v].
- Single blocks: our linear1 fuses to_q, to_k, to_v and proj_mlp (rows in that order); linear2 = proj_out.
- adaLN-Zero rows are (shift, scale, gate) x 2 (x 1 in single blocks) in both; the final
  AdaLayerNormContinuous emits (scale, shift), ours (shift, scale): the halves are swapped.
- Patches: their tokens flatten (p1 p2 c), ours (c p q): x_embedder columns and the output Linear's rows are
  permuted.
- RMSNorm weights (norm_q, norm_k, norm_added_q, norm_added_k) are our QKNorm scales; LayerNorms have no
  weights on either side; RoPE (16/24/24, theta 10000) has no weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from model.config import ModelConfig

Transform = Callable[[list[Tensor]], Tensor]
MMDIM_NEW = (
    "M4V MM-DiM block (Mamba2 mixer, registers, temporal branch): PyramidFlow has no counterpart; "
    "untrained until M4V weights exist"
)
SINGLE_DROPPED = "PyramidFlow attention single-stream block: m4v-768p has MM-DiM single blocks instead"


@dataclass(frozen=True)
class Rule:
    target: str  # key in our network's state dict
    sources: tuple[str, ...]  # PyramidFlow DiT keys
    fn: Transform


def _one(ts: list[Tensor]) -> Tensor:
    return ts[0]


def _rows(ts: list[Tensor]) -> Tensor:
    return torch.cat(ts, dim=0)


def _swap_halves(ts: list[Tensor]) -> Tensor:
    a, b = ts[0].chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _patch_in(p: int) -> Transform:
    return lambda ts: rearrange(ts[0], "d (p q c) -> d (c p q)", p=p, q=p)


def _patch_out(p: int) -> Transform:
    def fn(ts: list[Tensor]) -> Tensor:
        pattern = "(p q c) d -> (c p q) d" if ts[0].ndim == 2 else "(p q c) -> (c p q)"
        return rearrange(ts[0], pattern, p=p, q=p)

    return fn


def _linear(target: str, source: str, fn: Transform = _one) -> list[Rule]:
    return [Rule(f"{target}.{s}", (f"{source}.{s}",), fn) for s in ("weight", "bias")]


def _fused(target: str, sources: list[str]) -> list[Rule]:
    return [Rule(f"{target}.{s}", tuple(f"{x}.{s}" for x in sources), _rows) for s in ("weight", "bias")]


def _dual_block(i: int) -> list[Rule]:
    src, dst = f"transformer_blocks.{i}", f"double_blocks.{i}"
    a = f"{src}.attn"
    rules = _linear(f"{dst}.vid.mod.lin", f"{src}.norm1.linear")
    rules += _linear(f"{dst}.txt.mod.lin", f"{src}.norm1_context.linear")
    rules += _fused(f"{dst}.vid.qkv", [f"{a}.to_q", f"{a}.to_k", f"{a}.to_v"])
    rules += _fused(f"{dst}.txt.qkv", [f"{a}.add_q_proj", f"{a}.add_k_proj", f"{a}.add_v_proj"])
    for stream, q, k in (("vid", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
        rules.append(Rule(f"{dst}.{stream}.norm.query_norm.scale", (f"{a}.{q}.weight",), _one))
        rules.append(Rule(f"{dst}.{stream}.norm.key_norm.scale", (f"{a}.{k}.weight",), _one))
    rules += _linear(f"{dst}.vid.proj", f"{a}.to_out.0")
    rules += _linear(f"{dst}.txt.proj", f"{a}.to_add_out")
    for stream, ff in (("vid", "ff"), ("txt", "ff_context")):
        rules += _linear(f"{dst}.{stream}.mlp.0", f"{src}.{ff}.net.0.proj")
        rules += _linear(f"{dst}.{stream}.mlp.2", f"{src}.{ff}.net.2")
    return rules


def _single_block(i: int) -> list[Rule]:
    src, dst = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
    a = f"{src}.attn"
    rules = _linear(f"{dst}.modulation.lin", f"{src}.norm.linear")
    rules += _fused(f"{dst}.linear1", [f"{a}.to_q", f"{a}.to_k", f"{a}.to_v", f"{src}.proj_mlp"])
    rules.append(Rule(f"{dst}.norm.query_norm.scale", (f"{a}.norm_q.weight",), _one))
    rules.append(Rule(f"{dst}.norm.key_norm.scale", (f"{a}.norm_k.weight",), _one))
    rules += _linear(f"{dst}.linear2", f"{src}.proj_out")
    return rules


def dit_rules(cfg: ModelConfig) -> list[Rule]:
    """Every network parameter made from PyramidFlow tensors (keys without the "network." prefix)."""
    net, p = cfg.network, cfg.network.patch_size
    rules = _linear("x_embedder", "x_embedder")
    rules[0] = Rule("x_embedder.weight", ("x_embedder.weight",), _patch_in(p))
    rules += _linear("txt_in", "context_embedder")
    rules += _linear("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    rules += _linear("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    rules += _linear("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    rules += _linear("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    for i in range(net.num_dual_blocks):
        rules += _dual_block(i)
    if net.single_block == "attention":
        for i in range(net.num_single_blocks):
            rules += _single_block(i)
    rules += _linear("final_layer.adaLN_modulation", "norm_out.linear", _swap_halves)
    rules += _linear("final_layer.linear", "proj_out", _patch_out(p))
    return rules


def check_dit_config(pf: dict[str, Any], cfg: ModelConfig, where: str) -> None:
    """PyramidFlow's DiT config.json against the preset; a mismatch names the field and both values."""
    net = cfg.network
    want: dict[str, Any] = {
        "num_layers": net.num_dual_blocks,
        "num_single_layers": net.num_single_blocks,
        "num_attention_heads": net.heads,
        "attention_head_dim": net.head_dim,
        "joint_attention_dim": cfg.text.token_dim,
        "pooled_projection_dim": cfg.text.pooled_dim,
        "in_channels": cfg.vae.latent_channels * net.patch_size**2,
    }
    if "axes_dims_rope" in pf:
        want["axes_dims_rope"] = list(net.rope_axes)
    for key, value in want.items():
        if key not in pf:
            raise ValueError(f"{where}: no {key!r} (a PyramidFluxTransformer config.json?)")
        got = list(pf[key]) if isinstance(pf[key], list | tuple) else pf[key]
        if got != value:
            raise ValueError(f"{where}: {key} is {got!r}, preset {cfg.name!r} needs {value!r}")
