"""FLOPs of one network pass at a (unit, stage) shape: token layouts and per-block formulas. Pure Python.

model/flops.py's docstring states the counting conventions; this module holds the network half of the count,
model/flops_vae.py the VAE and text encoders, model/flops.py the per-request schedule and estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from model.config import ModelConfig, NetworkConfig

AttentionCounting = Literal["dense", "mask_aware"]
# "kernel": mamba-ssm's chunked scan (C B^T per group, a short last chunk stays short, conv1d counted).
# "ref": what FlopCounterMode sees on model/ssm_ref.py (B, C broadcast to heads, last chunk zero-padded,
# the depthwise conv done elementwise so not counted). Only for comparing with the counter.
ScanCounting = Literal["kernel", "ref"]

NETWORK_COMPONENTS = ("mixer_attention", "mixer_mamba", "temporal", "mlp", "modulation", "embed")
COMPONENTS = (*NETWORK_COMPONENTS, "vae", "text")
TIMESTEP_FREQ_DIM = 256  # sinusoidal timestep features before the embedder MLP (FLUX / DiT)


@dataclass
class FlopBreakdown:
    """FLOPs per component; missing components count as 0."""

    components: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, flops: float) -> None:
        self.components[name] = self.components.get(name, 0.0) + float(flops)

    def __add__(self, other: FlopBreakdown) -> FlopBreakdown:
        out = FlopBreakdown(dict(self.components))
        for name, flops in other.components.items():
            out.add(name, flops)
        return out

    def scaled(self, factor: float) -> FlopBreakdown:
        return FlopBreakdown({k: v * factor for k, v in self.components.items()})

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))

    @property
    def network_total(self) -> float:
        return float(sum(self.components.get(k, 0.0) for k in NETWORK_COMPONENTS))

    @property
    def mixer_total(self) -> float:
        return self.components.get("mixer_attention", 0.0) + self.components.get("mixer_mamba", 0.0)

    def as_dict(self) -> dict[str, float]:
        return dict(self.components)


@dataclass(frozen=True)
class TokenLayout:
    """Tokens of one (unit, stage) at batch 1. Frames oldest first; the current frame is the last."""

    text: int
    history: tuple[int, ...]  # video tokens of each history frame
    current: int  # video tokens of the frame being denoised
    pooled: int  # tokens per frame on the temporal branch's grid (full grid / temporal_pool_factor)

    @property
    def frames(self) -> tuple[int, ...]:
        return (*self.history, self.current)

    @property
    def context_video(self) -> int:
        return sum(self.history)

    @property
    def video(self) -> int:
        return self.context_video + self.current


@dataclass(frozen=True)
class _Pass:
    """What runs through the network in one evaluation (batch 1)."""

    text: int  # text tokens that run
    video: int  # video tokens that run (patch embed, blocks)
    attn_pairs: int  # (query, key) pairs of the joint attention
    mamba_len: int  # MM-DiM scan length that runs
    temporal_q: int  # pooled tokens through the temporal branch
    temporal_pairs: int  # (query, key) pairs of the temporal attention
    final: int  # video tokens through the final layer (0: no final layer)
    time_calls: int  # timestep embedder (MLP) evaluations: c(t) and, for "causal", c(t=0)
    pooled_calls: int  # pooled-text embedder evaluations (the cached step reuses the context's)
    dual_mod_calls: int  # adaLN calls per MM-DiT block: (text, video) x (ctx, cur), video only when cached


def stage_grid(cfg: ModelConfig, *, width: int, height: int, stage: int) -> tuple[int, int]:
    """(h, w) token grid of a pyramid stage: latent grid / 2^(S-1-stage) / patch."""
    h, w = cfg.latent_grid(width, height)
    down = 2 ** (cfg.sampler.num_stages - 1 - stage) * cfg.network.patch_size
    if h % down or w % down:
        raise ValueError(f"{width}x{height}: latent grid {h}x{w} not divisible by {down} at stage {stage}")
    return h // down, w // down


def token_layout(
    cfg: ModelConfig, *, width: int, height: int, unit: int, stage: int, text_tokens: int | None = None
) -> TokenLayout:
    grids = [math.prod(stage_grid(cfg, width=width, height=height, stage=s)) for s in range(stage + 1)]
    full = stage_grid(cfg, width=width, height=height, stage=cfg.sampler.num_stages - 1)
    f = cfg.network.temporal_pool_factor
    # frame j < unit is (unit - j) frames old: one pyramid level lower per frame of age beyond the first
    history = tuple(grids[max(0, stage - (unit - 1 - j))] for j in range(unit))
    return TokenLayout(
        text=cfg.text.max_tokens if text_tokens is None else text_tokens,
        history=history,
        current=grids[stage],
        pooled=max(1, full[0] // f) * max(1, full[1] // f),
    )


def _joint_pairs(text: int, frames: tuple[int, ...], text_sees_video: bool, mode: AttentionCounting) -> int:
    if mode == "dense":
        return (text + sum(frames)) ** 2
    pairs = text * (text + (sum(frames) if text_sees_video else 0))
    seen = text
    for n in frames:
        seen += n
        pairs += n * seen
    return pairs


def _causal_pairs(length: int, mode: AttentionCounting) -> int:
    return length * length if mode == "dense" else length * (length + 1) // 2


def _full_pass(layout: TokenLayout, *, paper: bool, mode: AttentionCounting) -> _Pass:
    frames = layout.frames
    return _Pass(
        text=layout.text,
        video=layout.video,
        attn_pairs=_joint_pairs(layout.text, frames, paper, mode),
        mamba_len=2 * layout.text + layout.video + len(frames),
        temporal_q=len(frames) * layout.pooled,
        temporal_pairs=layout.pooled * _causal_pairs(len(frames), mode),
        final=layout.current,
        time_calls=1 if paper else 2,
        pooled_calls=1,
        dual_mod_calls=4,
    )


def _context_pass(layout: TokenLayout, *, mode: AttentionCounting) -> _Pass:
    past = layout.history
    return _Pass(
        text=layout.text,
        video=layout.context_video,
        attn_pairs=_joint_pairs(layout.text, past, False, mode),
        mamba_len=2 * layout.text + layout.context_video + len(past),
        temporal_q=len(past) * layout.pooled,
        temporal_pairs=layout.pooled * _causal_pairs(len(past), mode),
        final=0,
        time_calls=2,  # network.prepare_context builds both c(t=0) vectors of a Conditioning
        pooled_calls=1,
        dual_mod_calls=4,
    )


def _current_pass(layout: TokenLayout) -> _Pass:
    n_frames = len(layout.frames)
    return _Pass(
        text=0,
        video=layout.current,
        attn_pairs=layout.current * (layout.text + layout.video),
        mamba_len=layout.current + 1,
        temporal_q=layout.pooled,
        temporal_pairs=layout.pooled * n_frames,
        final=layout.current,
        time_calls=1,
        pooled_calls=0,
        dual_mod_calls=2,
    )


def ssd_scan_flops(
    length: int,
    *,
    nheads: int,
    headdim: int,
    d_state: int,
    ngroups: int,
    chunk_size: int,
    mode: AttentionCounting = "dense",
    scan: ScanCounting = "kernel",
) -> float:
    """Chunked SSD (Mamba2) forward: intra-chunk C B^T and (C B^T * decay) X, chunk states, state output.

    The intra-chunk terms are quadratic in the chunk length; ``mask_aware`` counts only the causal half of
    (C B^T * decay) X as mamba-ssm's chunk_scan kernel does (C B^T itself is computed in full there).
    The inter-chunk state recurrence is elementwise-sized and not counted.
    """
    if scan == "ref":
        length = -(-length // chunk_size) * chunk_size
        ngroups = nheads
    full, rest = divmod(length, chunk_size)
    squares = full * chunk_size**2 + rest**2  # sum over chunks of chunk_len^2
    if mode == "mask_aware":
        squares_y = full * chunk_size * (chunk_size + 1) // 2 + rest * (rest + 1) // 2
    else:
        squares_y = squares
    cb = 2 * squares * d_state * ngroups
    intra = 2 * squares_y * nheads * headdim
    states_and_out = 2 * 2 * length * nheads * headdim * d_state
    return float(cb + intra + states_and_out)


def _mamba_flops(net: NetworkConfig, length: int, mode: AttentionCounting, scan: ScanCounting) -> float:
    m, d = net.mamba, net.width
    d_inner = m.d_inner(d)
    conv_dim = d_inner + 2 * m.ngroups * m.d_state
    proj = 2 * length * d * m.in_proj_width(d) + 2 * length * d_inner * d
    conv = 2 * length * conv_dim * m.d_conv if scan == "kernel" else 0
    ssd = ssd_scan_flops(
        length,
        nheads=m.nheads(d),
        headdim=m.headdim,
        d_state=m.d_state,
        ngroups=m.ngroups,
        chunk_size=m.chunk_size,
        mode=mode,
        scan=scan,
    )
    return proj + conv + ssd


@dataclass(frozen=True)
class Counting:
    """How to count: attention pairs (dense / mask-aware) and which scan implementation."""

    attention: AttentionCounting = "dense"
    scan: ScanCounting = "kernel"


def _embed_flops(cfg: ModelConfig, p: _Pass) -> float:
    net, d = cfg.network, cfg.network.width
    patch = cfg.vae.latent_channels * net.patch_size**2
    cond = (
        p.time_calls * 2 * (TIMESTEP_FREQ_DIM * d + d * d)
        + p.pooled_calls * 2 * (cfg.text.pooled_dim + d) * d
    )
    tokens_in = 2 * p.video * patch * d + 2 * p.text * cfg.text.token_dim * d
    return tokens_in + cond + 2 * p.final * d * patch


def _modulation_flops(net: NetworkConfig, p: _Pass) -> float:
    d = net.width
    dual = net.num_dual_blocks * p.dual_mod_calls * 2 * d * 6 * d
    single = net.num_single_blocks * 4 * 2 * d * 3 * d  # ctx + cur, before the mixer and at the gate
    final = 2 * d * 2 * d if p.final else 0
    return dual + single + final


def _single_block_flops(
    net: NetworkConfig, p: _Pass, tokens: int, core: float, how: Counting
) -> FlopBreakdown:
    """The 2nd-stage blocks: FLUX attention block or MM-DiM (Mamba2 + temporal branch + MLP)."""
    d, n = net.width, net.num_single_blocks
    mlp = int(net.mlp_ratio * d)
    out = FlopBreakdown()
    # linear1 (D -> 3D | mlp) and linear2 ([mixer out (D); mlp] -> D): QKV and the attention part of linear2
    # count as the mixer (its "output projection"), the rest as MLP
    mlp_flops = n * (2 * tokens * d * mlp + 2 * tokens * mlp * d)
    if net.single_block == "attention":
        out.add("mixer_attention", n * (2 * tokens * 4 * d * d + core))
        out.add("mlp", mlp_flops)
        return out
    out.add("mixer_mamba", n * _mamba_flops(net, p.mamba_len, how.attention, how.scan))
    inner = net.temporal_heads * net.head_dim  # the temporal branch is narrower than the network
    out.add("temporal", n * (2 * p.temporal_q * 4 * d * inner + 4 * p.temporal_pairs * inner))
    out.add("mlp", mlp_flops + n * 2 * tokens * d * d)  # the u part of linear2
    return out


def _pass_flops(cfg: ModelConfig, p: _Pass, how: Counting) -> FlopBreakdown:
    """One evaluation at batch 1."""
    net = cfg.network
    d, mlp = net.width, int(net.mlp_ratio * net.width)
    tokens = p.text + p.video
    core = 4 * p.attn_pairs * d
    out = FlopBreakdown({k: 0.0 for k in NETWORK_COMPONENTS})
    out.add("embed", _embed_flops(cfg, p))
    out.add("modulation", _modulation_flops(net, p))
    # MM-DiT: per stream QKV + output projection and MLP (the streams split the tokens), joint attention
    out.add("mixer_attention", net.num_dual_blocks * (2 * tokens * 4 * d * d + core))
    out.add("mlp", net.num_dual_blocks * 2 * tokens * 2 * d * mlp)
    return out + _single_block_flops(net, p, tokens, core, how)


def _layout_pass(
    cfg: ModelConfig, layout: TokenLayout, part: Literal["full", "context", "current"], how: Counting
) -> _Pass:
    if part == "current":
        return _current_pass(layout)
    if part == "context":
        return _context_pass(layout, mode=how.attention)
    return _full_pass(layout, paper=cfg.network.context_mode == "paper", mode=how.attention)


def runs_cached(cfg: ModelConfig, cached: bool) -> bool:
    return cached and cfg.network.context_mode == "causal"


def step_flops(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    unit: int,
    stage: int,
    cached: bool = True,
    batch: int = 2,
    text_tokens: int | None = None,
    attention: AttentionCounting = "dense",
    scan: ScanCounting = "kernel",
) -> FlopBreakdown:
    """One network evaluation at (unit, stage). Cached: the current frame only (see context_flops)."""
    layout = token_layout(cfg, width=width, height=height, unit=unit, stage=stage, text_tokens=text_tokens)
    how = Counting(attention, scan)
    part: Literal["full", "current"] = "current" if runs_cached(cfg, cached) else "full"
    return _pass_flops(cfg, _layout_pass(cfg, layout, part, how), how).scaled(batch)


def context_flops(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    unit: int,
    stage: int,
    batch: int = 2,
    text_tokens: int | None = None,
    attention: AttentionCounting = "dense",
    scan: ScanCounting = "kernel",
) -> FlopBreakdown:
    """The cached context (text + history) computed once per (unit, stage) ("causal" mode only)."""
    layout = token_layout(cfg, width=width, height=height, unit=unit, stage=stage, text_tokens=text_tokens)
    how = Counting(attention, scan)
    return _pass_flops(cfg, _layout_pass(cfg, layout, "context", how), how).scaled(batch)
