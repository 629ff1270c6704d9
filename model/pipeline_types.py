"""The data the worker exchanges with the model's pipeline (model/pipeline.py). Pure Python + numpy types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class GenerationRequest:
    """Fully resolved request: every field set (the worker resolves defaults and the random seed)."""

    prompt: str
    width: int
    height: int
    num_frames: int
    seed: int
    negative_prompt: str | None = None  # None -> the preset's default negative prompt
    guidance_scale: float = 7.0  # first latent frame
    video_guidance_scale: float = 5.0  # later latent frames
    first_frame_steps: tuple[int, ...] | None = None  # None -> preset default, one entry per stage
    later_frame_steps: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StepProgress:
    """Reported after every sampler step. The callback may raise to cancel the generation."""

    unit: int  # autoregressive unit (latent frame) index, 0-based
    units_total: int
    stage: int  # pyramid stage, 0-based
    stages_total: int
    step: int  # step inside the stage, 1-based (the step just finished)
    steps_total: int  # steps in this stage
    steps_done: int  # network evaluations (CFG pair counts once) done so far in the whole request
    steps_all: int  # ... and in total
    step_seconds: float  # wall time of the step just finished

    @property
    def fraction(self) -> float:
        return self.steps_done / self.steps_all


@dataclass(frozen=True)
class DecodedChunk:
    """Video frames of one finished autoregressive unit, decoded as soon as that unit is done."""

    unit: int
    first_frame: int  # index of frames[0] in the whole video
    frames: np.ndarray  # (n, H, W, 3) uint8


@dataclass
class PhaseTimings:
    text_s: float = 0.0
    sampling_s: float = 0.0
    decode_s: float = 0.0


@dataclass
class GenerationResult:
    frames: np.ndarray  # (F, H, W, 3) uint8
    seed: int
    timings: PhaseTimings
    flops: dict[str, float]  # component -> FLOPs actually spent (model/flops.py breakdown as a dict)
    peak_memory_bytes: int = 0  # CUDA peak (0 on CPU)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_flops(self) -> float:
        return float(sum(self.flops.values()))


ProgressCallback = Callable[[StepProgress], None]
ChunkCallback = Callable[[DecodedChunk], None]
