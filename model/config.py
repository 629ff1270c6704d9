"""Model presets: frozen dataclasses, pure Python (no torch), so the API can validate against them.

Tags: [paper] from the M4V paper, [pyramidflow] from PyramidFlow, [decided] ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

# "causal": context (text, history) modulated with c(t=0), text sees text only, RoPE on the full-resolution
# grid; cacheable. "paper": c(t) everywhere, text sees every token. "pyramidflow": what PyramidFlow-miniFLUX
# was trained with (c(t) everywhere, text sees text and frame 0, RoPE on the current frame's token grid with
# the history frames interpolated onto it); see docs/MODEL.md.
ContextMode = Literal["paper", "causal", "pyramidflow"]
SamplerSchedule = Literal["global", "pyramidflow"]
SingleBlockKind = Literal["mmdim", "attention"]
TextEncoderKind = Literal["t5_clip", "minilm"]
# "m4v": model/vae.py's causal VAE. "pyramidflow": PyramidFlow-miniFLUX's causal video VAE decoder
# (model/pyramid_flow/vae_decoder.py; decode only, its encoder is not ported).
VAEKind = Literal["m4v", "pyramidflow"]


@dataclass(frozen=True)
class MambaConfig:
    """Mamba2 mixer hyper-parameters; names follow mamba_ssm.modules.mamba2.Mamba2."""

    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 80
    ngroups: int = 1
    chunk_size: int = 256

    def d_inner(self, d_model: int) -> int:
        return self.expand * d_model

    def nheads(self, d_model: int) -> int:
        return self.d_inner(d_model) // self.headdim

    def in_proj_width(self, d_model: int) -> int:
        # [z, x, B, C, dt]: must be a multiple of 8 for causal-conv1d's channel-last kernel.
        return 2 * self.d_inner(d_model) + 2 * self.ngroups * self.d_state + self.nheads(d_model)


@dataclass(frozen=True)
class NetworkConfig:
    width: int = 1920
    heads: int = 30
    num_dual_blocks: int = 8  # MM-DiT, dual stream [paper]
    num_single_blocks: int = 16  # MM-DiM (or attention for the baseline) [paper]
    single_block: SingleBlockKind = "mmdim"
    mlp_ratio: float = 4.0
    patch_size: int = 2
    rope_axes: tuple[int, int, int] = (16, 24, 24)  # (t, h, w) dims of 3D RoPE, sum = head dim
    rope_theta: float = 10000.0
    temporal_heads: int = 8
    # The temporal branch pools every frame to the full token grid / this factor, i.e. the lowest pyramid
    # stage's grid (2**(num_stages-1) for the sampler's 3 stages) [decided].
    temporal_pool_factor: int = 4
    max_latent_frames: int = 64  # size of the per-frame register table (481 frames -> 61 latent frames)
    context_mode: ContextMode = "causal"
    mamba: MambaConfig = field(default_factory=MambaConfig)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} not divisible by heads {self.heads}")
        if sum(self.rope_axes) != self.head_dim:
            raise ValueError(f"rope_axes {self.rope_axes} must sum to head_dim {self.head_dim}")
        if self.context_mode == "pyramidflow" and self.single_block != "attention":
            raise ValueError(
                "context_mode 'pyramidflow' (PyramidFlow's network) needs single_block 'attention'"
            )
        if self.mamba.in_proj_width(self.width) % 8:
            raise ValueError("Mamba2 in_proj width must be a multiple of 8 (causal-conv1d channel-last)")


@dataclass(frozen=True)
class VAEConfig:
    """Causal 3D VAE (MAGVIT-v2 style). Factors are derived from the per-block down-sampling flags."""

    kind: VAEKind = "m4v"
    in_channels: int = 3
    latent_channels: int = 16
    encoder_channels: tuple[int, ...] = (128, 256, 512, 512)
    decoder_channels: tuple[int, ...] = (512, 512, 256, 128)
    encoder_layers: int = 2
    decoder_layers: int = 3
    spatial_down: tuple[bool, ...] = (True, True, True, False)
    temporal_down: tuple[bool, ...] = (True, True, True, False)
    norm_groups: int = 32
    scaling_factor: float = 1 / 3.0986  # latent = (z - shift) * scale [pyramidflow video VAE]
    shift_factor: float = -0.2343
    tile_px: int = 256  # decode tiles (pixels) with 1/4 overlap, blended
    tile_overlap: float = 0.25
    # The first latent frame (a still image) may have its own statistics: PyramidFlow-miniFLUX scales it with
    # its image factors. None = the video factors above.
    image_scaling_factor: float | None = None
    image_shift_factor: float | None = None

    def factors(self, first_frame: bool) -> tuple[float, float]:
        """(scale, shift) of a latent frame: latent = (z - shift) * scale."""
        if first_frame and self.image_scaling_factor is not None:
            shift = self.image_shift_factor if self.image_shift_factor is not None else self.shift_factor
            return self.image_scaling_factor, shift
        return self.scaling_factor, self.shift_factor

    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(self.spatial_down)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_down)


@dataclass(frozen=True)
class TextConfig:
    kind: TextEncoderKind = "t5_clip"
    token_dim: int = 4096  # T5-XXL hidden size
    pooled_dim: int = 768  # CLIP-L pooled
    max_tokens: int = 128
    t5_path: str | None = None  # local directories (transformers save_pretrained layout)
    clip_path: str | None = None


@dataclass(frozen=True)
class SamplerConfig:
    """Pyramidal flow matching [pyramidflow]; stage k spans noise levels [1-k/S, 1-(k+1)/S] before the
    jump-point correction."""

    num_stages: int = 3
    first_frame_steps: tuple[int, ...] = (20, 20, 20)
    later_frame_steps: tuple[int, ...] = (10, 10, 10)
    guidance_scale: float = 7.0
    video_guidance_scale: float = 5.0
    renoise_gamma: float = 1.0 / 3.0
    negative_prompt: str = ""
    timestep_scale: float = 1000.0  # network sees t = sigma * timestep_scale
    # "global": the network predicts noise - x0 and sees t = sigma * timestep_scale (model/schedule.py).
    # "pyramidflow": PyramidFlow's scheduler: per stage the network predicts the stage's own velocity (stage
    # start point - stage end point), Euler steps run a local ratio 1 -> 0, and t follows PyramidFlow's
    # re-mapped timestep ranges (model/schedule.py pyramidflow_stage_steps).
    schedule: SamplerSchedule = "global"
    prompt_suffix: str = ""  # appended to every (positive) prompt before encoding


@dataclass(frozen=True)
class ModelConfig:
    """One servable preset: network + VAE + text encoders + sampler + the sizes it accepts."""

    name: str
    network: NetworkConfig
    vae: VAEConfig
    text: TextConfig
    sampler: SamplerConfig
    resolutions: tuple[tuple[int, int], ...]  # (width, height) in pixels; the first is the default
    max_frames: int
    default_frames: int
    default_fps: int = 24

    @property
    def default_resolution(self) -> tuple[int, int]:
        return self.resolutions[0]

    def latent_frames(self, num_frames: int) -> int:
        """Causal VAE: the first frame alone, then one latent frame per temporal_factor frames."""
        tf = self.vae.temporal_factor
        if num_frames < 1 or (num_frames - 1) % tf:
            raise ValueError(f"num_frames {num_frames} must be {tf}k+1")
        return 1 + (num_frames - 1) // tf

    def latent_grid(self, width: int, height: int) -> tuple[int, int]:
        """(h, w) of the full-resolution latent."""
        f = self.vae.spatial_factor
        return height // f, width // f

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelConfig:
        net = dict(d["network"])
        net["mamba"] = MambaConfig(**net["mamba"])
        net["rope_axes"] = tuple(net["rope_axes"])
        vae = {k: tuple(v) if isinstance(v, list) else v for k, v in d["vae"].items()}
        smp = {k: tuple(v) if isinstance(v, list) else v for k, v in d["sampler"].items()}
        return ModelConfig(
            name=d["name"],
            network=NetworkConfig(**net),
            vae=VAEConfig(**vae),
            text=TextConfig(**d["text"]),
            sampler=SamplerConfig(**smp),
            resolutions=tuple(tuple(r) for r in d["resolutions"]),  # type: ignore[misc]
            max_frames=d["max_frames"],
            default_frames=d["default_frames"],
            default_fps=d["default_fps"],
        )


# PyramidFlow-miniFLUX's inference defaults (pyramid_dit_for_video_gen_pipeline.py generate()).
PYRAMIDFLOW_PROMPT_SUFFIX = ", hyper quality, Ultra HD, 8K"
PYRAMIDFLOW_NEGATIVE_PROMPT = (
    "cartoon style, worst quality, low quality, blurry, absolute black, absolute white, low res, "
    "extra limbs, extra digits, misplaced objects, mutated anatomy, monochrome, horror"
)


def _m4v_768p(single_block: SingleBlockKind, name: str) -> ModelConfig:
    # attn-768p is PyramidFlow-miniFLUX's architecture: served with PyramidFlow's conditioning, masks, RoPE
    # positions and scheduler so converted weights make PyramidFlow's video. m4v-768p keeps M4V's cacheable
    # "causal" context and the global schedule (its MM-DiM half is ours).
    pyramidflow = single_block == "attention"
    return ModelConfig(
        name=name,
        network=NetworkConfig(
            single_block=single_block, context_mode="pyramidflow" if pyramidflow else "causal"
        ),
        # PyramidFlow-miniFLUX's causal video VAE (decoder): its weights are the public ones
        vae=VAEConfig(kind="pyramidflow", image_scaling_factor=1 / 1.8726, image_shift_factor=-0.04),
        text=TextConfig(),
        sampler=SamplerConfig(
            schedule="pyramidflow" if pyramidflow else "global",
            prompt_suffix=PYRAMIDFLOW_PROMPT_SUFFIX if pyramidflow else "",
            negative_prompt=PYRAMIDFLOW_NEGATIVE_PROMPT if pyramidflow else "",
        ),
        resolutions=((1280, 768), (640, 384)),
        max_frames=241,
        default_frames=121,
    )


def _tiny() -> ModelConfig:
    # 128x128, 17 frames: VAE /4 in space and time (/8 would leave 16x16 latents and 3 latent frames).
    return ModelConfig(
        name="tiny",
        network=NetworkConfig(
            width=128,
            heads=4,
            num_dual_blocks=2,
            num_single_blocks=4,
            rope_axes=(8, 12, 12),
            temporal_heads=4,
            max_latent_frames=16,
            mamba=MambaConfig(d_state=16, headdim=32, chunk_size=64),
        ),
        vae=VAEConfig(
            latent_channels=8,
            encoder_channels=(32, 64, 64),
            decoder_channels=(64, 64, 32),
            encoder_layers=1,
            decoder_layers=1,
            spatial_down=(True, True, False),
            temporal_down=(True, True, False),
            norm_groups=8,
            scaling_factor=1.0,
            shift_factor=0.0,
            tile_px=128,
        ),
        text=TextConfig(kind="minilm", token_dim=384, pooled_dim=384, max_tokens=32),
        sampler=SamplerConfig(first_frame_steps=(4, 4, 4), later_frame_steps=(3, 3, 3)),
        resolutions=((128, 128),),
        max_frames=33,
        default_frames=17,
        default_fps=8,
    )


PRESETS: dict[str, ModelConfig] = {
    "m4v-768p": _m4v_768p("mmdim", "m4v-768p"),
    "attn-768p": _m4v_768p("attention", "attn-768p"),
    "tiny": _tiny(),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
