"""Analytic FLOP counter for one whole request (M4V_SPEC.md sections 2 and 3). Pure Python: no torch.

Conventions
- 2 FLOPs per multiply-add; only matmul-like work is counted (linear layers, attention QK^T and PV, the
  SSD scan's contractions, convolutions). Norms, activations, RoPE, pooling and elementwise gating are not,
  exactly like torch.utils.flop_counter.FlopCounterMode.
- Attention core = 4 * B * Lq * Lk * d per layer (QK^T and PV, d = heads * head_dim). ``attention="dense"``
  (default) counts every (query, key) pair, which is what SDPA with a boolean mask computes (flash /
  memory-efficient kernels do not skip a non-causal block mask) and what FlopCounterMode reports.
  ``attention="mask_aware"`` counts only the pairs the temporal-causal mask keeps (text -> text, frame j ->
  text + frames <= j), i.e. what a block-sparse kernel would do.
- Token counts per (unit, stage) follow the compressed pyramid history: frame k-1 at the stage's resolution,
  k-2 one level lower, older frames at the lowest level; text length = cfg.text.max_tokens.
- ``cached=True`` ("causal" context mode): per (unit, stage) the context (text + history) runs once at batch
  cfg_batch, then every step runs only the current frame's tokens (+ its register), whose attention queries
  see the cached keys. ``cached=False``: every step runs the whole sequence. "paper" mode is always uncached.

Agreement with the spec's estimate (121 frames, 768x1280, steps [20,20,20]/[10,10,10], CFG 2, network only):
the spec says attention 17.8 PF uncached / 7.5 cached, M4V 14.9 / 6.5, mixer reduction 42% (121 frames) / 50%
(241), 1.29 / 1.37 PF per video second (cached M4V, 5 s / 10 s). This module (dense) gives attention 17.85 /
7.16, M4V 15.71 / 6.25, mixer reduction 42.1% / 50.2%, 1.25 / 1.34 PF per video second. Reconstructed reasons:
- The spec's numbers are reproduced by DENSE attention counting (its own section 3 formula 4*B*L^2*d), not by
  mask-aware counting: mask-aware gives attention 15.30 PF uncached and a mixer reduction of only 25.4% (121)
  / 31.0% (241), because the temporal-causal mask already removes about half of the attention core that Mamba
  saves. Reduction claims must name the counting; dense is what SDPA with a boolean mask executes.
- Cached: the spec's 7.5 / 6.5 are 0.34 PF above a count without the current frame in the context, which is
  exactly one extra full-network pass of the current frame per (unit, stage) at batch 2: it counted the
  context as the whole sequence. network.prepare_context runs the context without the current frame, so
  that pass is not counted here (M4V cached is then 6.16 + 0.09 for the temporal branch and SSD = 6.25).
- M4V uncached is 0.8 PF above the spec: the temporal branch (0.25 PF), the SSD scan (~0.25 PF) and the
  Mamba2 projections of the second text copy and the registers (~0.1 PF) are not in the spec's estimate, and
  linear2's input slice from the mixer branch (D x D) counts as MLP here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from model.config import ModelConfig, NetworkConfig, TextConfig, VAEConfig

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


def _is_cached(cfg: ModelConfig, cached: bool) -> bool:
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
    part: Literal["full", "current"] = "current" if _is_cached(cfg, cached) else "full"
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


def _conv3d(c_in: int, c_out: int, kernel: int, pixels: int, frames: int) -> float:
    return 2.0 * frames * pixels * c_out * c_in * kernel**3


def _decoder_flops(vae: VAEConfig, h: int, w: int, latent_frames: int) -> float:
    """model/vae.py Decoder on an (h, w) latent tile, `latent_frames` frames decoded causally (first alone).

    A level whose temporal up-sampling factor so far is m holds 1 + m * (latent_frames - 1) frames.
    """
    chs, g_layers = vae.decoder_channels, vae.decoder_layers
    pixels, m = h * w, 1

    def frames(mult: int) -> int:
        return 1 + mult * (latent_frames - 1)

    total = _conv3d(vae.latent_channels, chs[0], 3, pixels, frames(m))
    total += 2 * 2 * _conv3d(chs[0], chs[0], 3, pixels, frames(m))  # mid: 2 ResNet blocks
    prev = chs[0]
    for ch, (spatial, temporal) in zip(chs, _decoder_upsampling(vae), strict=True):
        for j in range(g_layers):
            c_in = prev if j == 0 else ch
            total += _conv3d(c_in, ch, 3, pixels, frames(m)) + _conv3d(ch, ch, 3, pixels, frames(m))
            if c_in != ch:
                total += _conv3d(c_in, ch, 1, pixels, frames(m))
        pixels *= 4 if spatial else 1
        m *= 2 if temporal else 1
        if spatial or temporal:
            total += _conv3d(ch, ch, 3, pixels, frames(m))
        prev = ch
    return total + _conv3d(prev, vae.in_channels, 3, pixels, frames(m))


def _decoder_upsampling(vae: VAEConfig) -> list[tuple[bool, bool]]:
    """Same rule as model.vae.decoder_upsampling (repeated here: this module must not import torch)."""
    flags = list(zip(vae.spatial_down, vae.temporal_down, strict=True))
    return [*reversed(flags[:-1]), flags[-1]]


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    return [*range(0, size - tile, stride), size - tile]


def vae_decode_flops(
    vae: VAEConfig, *, latent_h: int, latent_w: int, latent_frames: int, tiled: bool = True
) -> float:
    """Decode of one video (batch 1) as StreamingDecoder does it: overlapping spatial tiles, each decoded
    whole (tile overlap is recomputed: 28 tiles of 32x32 latents at 768x1280, 1.87x the frame area)."""
    if not tiled:
        return _decoder_flops(vae, latent_h, latent_w, latent_frames)
    tile = max(1, vae.tile_px // vae.spatial_factor)
    stride = max(1, tile - int(tile * vae.tile_overlap))
    total = 0.0
    for y in _tile_starts(latent_h, tile, stride):
        for x in _tile_starts(latent_w, tile, stride):
            total += _decoder_flops(vae, min(tile, latent_h - y), min(tile, latent_w - x), latent_frames)
    return total


# Linear-layer weights applied per token (non-embedding), per prompt: T5-XXL encoder (24 layers, d 4096,
# gated FFN 10240) + CLIP-L text (12 layers, d 768, FFN 3072, 77 tokens); all-MiniLM-L6-v2 (6 layers, d 384).
_TEXT_ENCODERS: dict[str, list[tuple[float, int | None]]] = {
    "t5_clip": [(24 * (4 * 4096**2 + 3 * 4096 * 10240), None), (12 * (4 * 768**2 + 2 * 768 * 3072), 77)],
    "minilm": [(6 * (4 * 384**2 + 2 * 384 * 1536), None)],
}


def text_encoder_flops(text: TextConfig, prompts: int = 2) -> float:
    """Approximate: 2 * linear weights * tokens (attention cores ignored, < 3% at 128 tokens)."""
    total = 0.0
    for weights, tokens in _TEXT_ENCODERS.get(text.kind, []):
        total += 2 * weights * (tokens or text.max_tokens) * prompts
    return total


@dataclass(frozen=True)
class StepCost:
    """FLOPs of one sampler step (a CFG pair counts once), in execution order. ``network`` includes the
    cached context on the first step of each (unit, stage); ``decode`` is the VAE decode of the unit's
    frames, charged to its last step (the pipeline decodes each unit as soon as it is done)."""

    unit: int
    stage: int
    step: int  # 1-based inside the stage
    network: float
    decode: float = 0.0

    @property
    def total(self) -> float:
        return self.network + self.decode


def _resolve_steps(cfg: ModelConfig, first: tuple[int, ...] | None, later: tuple[int, ...] | None
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:  # fmt: skip
    first = tuple(first or cfg.sampler.first_frame_steps)
    later = tuple(later or cfg.sampler.later_frame_steps)
    for name, steps in (("first_frame_steps", first), ("later_frame_steps", later)):
        if len(steps) != cfg.sampler.num_stages or min(steps) < 1:
            raise ValueError(f"{name} {steps} must be {cfg.sampler.num_stages} positive step counts")
    return first, later


def _unit_decode(cfg: ModelConfig, width: int, height: int, unit: int) -> float:
    """Decode FLOPs of one unit's frames: the streaming decode of latent frame `unit` alone."""
    h, w = cfg.latent_grid(width, height)
    after = vae_decode_flops(cfg.vae, latent_h=h, latent_w=w, latent_frames=unit + 1)
    before = vae_decode_flops(cfg.vae, latent_h=h, latent_w=w, latent_frames=unit) if unit else 0.0
    return after - before


def _stage_breakdowns(
    cfg: ModelConfig, *, width: int, height: int, unit: int, stage: int, batch: int, cached: bool,
    text_tokens: int | None, attention: AttentionCounting,
) -> tuple[FlopBreakdown, FlopBreakdown]:  # fmt: skip
    """(once per (unit, stage), per step)."""
    kw = {"width": width, "height": height, "unit": unit, "stage": stage, "batch": batch}
    kw_c = {"text_tokens": text_tokens, "attention": attention}
    per_step = step_flops(cfg, cached=cached, **kw, **kw_c)  # type: ignore[arg-type]
    once = context_flops(cfg, **kw, **kw_c) if _is_cached(cfg, cached) else FlopBreakdown()  # type: ignore[arg-type]
    return once, per_step


def step_schedule(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    first_frame_steps: tuple[int, ...] | None = None,
    later_frame_steps: tuple[int, ...] | None = None,
    cfg_batch: int = 2,
    cached: bool = True,
    text_tokens: int | None = None,
    attention: AttentionCounting = "dense",
) -> list[StepCost]:
    """Every sampler step of a request with its FLOPs, in the order the sampler runs them (for ETAs)."""
    first, later = _resolve_steps(cfg, first_frame_steps, later_frame_steps)
    units = cfg.latent_frames(num_frames)
    out: list[StepCost] = []
    for unit in range(units):
        steps = first if unit == 0 else later
        for stage, n in enumerate(steps):
            once, each = _stage_breakdowns(
                cfg, width=width, height=height, unit=unit, stage=stage, batch=cfg_batch, cached=cached,
                text_tokens=text_tokens, attention=attention,
            )  # fmt: skip
            for i in range(n):
                out.append(StepCost(unit, stage, i + 1, each.total + (once.total if i == 0 else 0.0)))
        out[-1] = StepCost(
            unit, out[-1].stage, out[-1].step, out[-1].network, _unit_decode(cfg, width, height, unit)
        )
    return out


def remaining_flops(schedule: list[StepCost], steps_done: int) -> float:
    """FLOPs still to spend after `steps_done` sampler steps (network + the decodes not yet done)."""
    return float(sum(s.total for s in schedule[steps_done:]))


def estimate_flops(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    first_frame_steps: tuple[int, ...] | None = None,
    later_frame_steps: tuple[int, ...] | None = None,
    cfg_batch: int = 2,
    cached: bool = True,
    text_tokens: int | None = None,
    attention: AttentionCounting = "dense",
    include_vae: bool = True,
    include_text: bool = True,
) -> FlopBreakdown:
    """FLOPs of a whole request by component: network at every step (+ cached contexts), VAE decode of the
    whole video (batch 1, tiled as served), text encoding of prompt and negative prompt (approximate)."""
    first, later = _resolve_steps(cfg, first_frame_steps, later_frame_steps)
    total = FlopBreakdown({k: 0.0 for k in NETWORK_COMPONENTS})
    for unit in range(cfg.latent_frames(num_frames)):
        for stage, n in enumerate(first if unit == 0 else later):
            once, each = _stage_breakdowns(
                cfg, width=width, height=height, unit=unit, stage=stage, batch=cfg_batch, cached=cached,
                text_tokens=text_tokens, attention=attention,
            )  # fmt: skip
            total = total + once + each.scaled(n)
    if include_vae:
        h, w = cfg.latent_grid(width, height)
        total.add(
            "vae",
            vae_decode_flops(cfg.vae, latent_h=h, latent_w=w, latent_frames=cfg.latent_frames(num_frames)),
        )
    if include_text:
        total.add("text", text_encoder_flops(cfg.text, prompts=cfg_batch))
    return total


def mixer_flop_reduction(
    cfg_mamba: ModelConfig,
    cfg_attn: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    attention: AttentionCounting = "dense",
) -> float:
    """1 - (Mamba2 mixers) / (attention mixers) of the single-stream blocks over a whole uncached generation
    (M4V_SPEC.md section 3: attention incl. QKV/output projections vs Mamba2 incl. its projections). The
    MM-DiT blocks are identical in both networks and left out."""

    def single_mixer(cfg: ModelConfig) -> float:
        # the same network without MM-DiT blocks isolates the single-stream mixers
        no_dual = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, num_dual_blocks=0))
        b = estimate_flops(no_dual, width=width, height=height, num_frames=num_frames, cached=False,
                           attention=attention, include_vae=False, include_text=False)  # fmt: skip
        return b.mixer_total

    return 1.0 - single_mixer(cfg_mamba) / single_mixer(cfg_attn)
