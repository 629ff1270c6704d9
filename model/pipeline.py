"""VideoPipeline, what the worker calls: text encode -> sampler -> streaming VAE decode, timings, FLOPs.

Each latent frame is decoded as soon as the sampler finishes it, so the first frames reach on_chunk while the
rest of the video is still being sampled; decode_s is the sum of those interleaved decodes and sampling_s
excludes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from model.checkpoint_source import RANDOM_WEIGHTS, load_model_weights, refuse_random_weights
from model.config import ModelConfig, get_preset
from model.flops import estimate_flops
from model.network import M4VNetwork
from model.parallel.cfg import CfgParallelDenoiser
from model.parallel.vae_tiles import ParallelStreamingDecoder
from model.pipeline_types import (
    ChunkCallback,
    DecodedChunk,
    GenerationRequest,
    GenerationResult,
    PhaseTimings,
    ProgressCallback,
)
from model.runtime import RuntimeOptions
from model.sampler import Denoiser, sample_video
from model.text_encoder import TextEmbeddings, TextEncoder, build_text_encoder, with_text_dirs_from
from model.vae import CausalVAE, StreamingDecoder
from model.vae_stream import BatchedStreamingDecoder, OverlappedSink, stream_decoder

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"

FrameDecoder = StreamingDecoder | BatchedStreamingDecoder | ParallelStreamingDecoder  # has decode_next
DecoderFactory = Callable[[], FrameDecoder]  # a fresh streaming decoder per request; see parallel_vae


def check_request(cfg: ModelConfig, req: GenerationRequest) -> None:
    """Cross-field validation against the preset; the ValueError names the offending field and value."""
    if (req.width, req.height) not in cfg.resolutions:
        raise ValueError(
            f"width/height {req.width}x{req.height} not supported by preset {cfg.name!r}; "
            f"choose one of {[f'{w}x{h}' for w, h in cfg.resolutions]}"
        )
    tf = cfg.vae.temporal_factor
    if not 1 <= req.num_frames <= cfg.max_frames or (req.num_frames - 1) % tf:
        raise ValueError(f"num_frames {req.num_frames} must be {tf}k+1 and in [1, {cfg.max_frames}]")
    stages = cfg.sampler.num_stages
    for name in ("first_frame_steps", "later_frame_steps"):
        steps = getattr(req, name)
        if steps is not None and (len(steps) != stages or min(steps) < 1):
            raise ValueError(f"{name} {steps} must be {stages} positive step counts (one per stage)")


def find_packaged_weights(preset: str) -> Path | None:
    """model/weights/<preset> (checkpoint dir) or model/weights/<preset>.safetensors, if shipped."""
    for path in (WEIGHTS_DIR / preset, WEIGHTS_DIR / f"{preset}.safetensors"):
        if path.exists():
            return path
    return None


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, n, H, W) in [-1, 1] -> (n, H, W, 3) uint8."""
    x = ((video[0].float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()  # (n, H, W, 3)


@dataclass
class _ChunkSink:
    """on_latent target: decodes each finished latent frame at once and hands the frames on."""

    decoder: FrameDecoder
    dtype: torch.dtype
    timings: PhaseTimings
    on_chunk: ChunkCallback | None
    chunks: list[np.ndarray] = field(default_factory=list)
    frames_done: int = 0

    def __call__(self, unit: int, latent: torch.Tensor) -> None:
        began = time.perf_counter()
        frames = to_uint8_frames(self.decoder.decode_next(latent.to(self.dtype)))
        self.timings.decode_s += time.perf_counter() - began
        self.chunks.append(frames)
        chunk = DecodedChunk(unit=unit, first_frame=self.frames_done, frames=frames)
        self.frames_done += frames.shape[0]
        if self.on_chunk is not None:
            self.on_chunk(chunk)


class VideoPipeline:
    def __init__(
        self,
        cfg: ModelConfig,
        network: M4VNetwork,
        vae: CausalVAE,
        text_encoder: TextEncoder,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        use_cache: bool = True,
        runtime: RuntimeOptions | None = None,
    ) -> None:
        self.cfg = cfg
        self.runtime = runtime or network.runtime
        self.network = network.eval()
        self.vae = vae.eval()
        if self.runtime.vae_channels_last:
            self.vae = self.vae.to(memory_format=torch.channels_last_3d)
        if self.runtime.cudnn_benchmark and torch.device(device).type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.dtype = dtype
        self.use_cache = use_cache
        self.denoiser: Denoiser = self.network  # what the sampler calls; see parallel_cfg
        self.make_decoder: DecoderFactory = self._one_process_decoder  # what generate decodes with
        self.weights_source = RANDOM_WEIGHTS  # from_preset: the checkpoint path it loaded
        self.weights_sha256: str | None = None  # worker/pipeline.py fills it in (hashing is not free)

    @classmethod
    def from_preset(
        cls,
        name_or_cfg: str | ModelConfig,
        *,
        weights: str | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        scan_backend: str = "auto",
        use_cache: bool = True,
        stand_in_text: bool = False,
        runtime: RuntimeOptions | None = None,
        allow_random_weights: bool = False,
    ) -> VideoPipeline:
        """Build network, VAE and text encoder for a preset; dtype None means float32; runtime: speed
        options (model/runtime.py), default the reference behaviour. weights: one of our checkpoints or an
        unconverted PyramidFlow-miniFLUX folder (converted in memory). Without weights (given or packaged)
        only the tiny preset starts, unless allow_random_weights (benchmarks): then an ERROR banner is
        logged."""
        cfg = get_preset(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
        dtype = dtype or torch.float32
        path = weights or find_packaged_weights(cfg.name)
        if path is None:
            refuse_random_weights(cfg.name, allow_random_weights)
        else:
            cfg = with_text_dirs_from(cfg, path)  # a PyramidFlow folder also holds the text encoders
        network = M4VNetwork.for_preset(
            cfg, scan_backend=scan_backend, device=device, dtype=dtype, runtime=runtime
        )
        vae = CausalVAE(cfg.vae, device=device, dtype=dtype)
        random_parts: list[str] = []
        if path is not None:
            log.info("preset %r: loading weights from %s", cfg.name, path)
            random_parts = load_model_weights(
                str(path), cfg, network, vae, device=device, dtype=dtype, allow_random=allow_random_weights
            )
        text_encoder = build_text_encoder(cfg.text, device=device, dtype=dtype, stand_in=stand_in_text)
        pipe = cls(
            cfg, network, vae, text_encoder, device=device, dtype=dtype, use_cache=use_cache, runtime=runtime
        )
        pipe.weights_source = RANDOM_WEIGHTS if path is None else str(path)
        if path is not None and random_parts:
            pipe.weights_source = f"{path} (RANDOM {', '.join(random_parts)})"
        return pipe

    def parallel_cfg(self, group: dist.ProcessGroup | None = None) -> None:
        """Split every step's CFG halves over the 2 ranks of `group` (model/parallel/cfg.py). Every rank
        builds the same pipeline and calls generate() with the same request; all get the same video."""
        self.denoiser = CfgParallelDenoiser(self.network, group)

    def parallel_vae(self, group: dist.ProcessGroup | None = None) -> None:
        """Decode each latent frame's spatial tiles over the ranks of `group` (model/parallel/vae_tiles.py):
        every rank decodes its share and all get the whole frames. Every rank must call generate() with the
        same request and stop at the same step (model/parallel/cfg_pair.py agrees on it), or one waits in
        the decoder's all_gather. With overlap_decode, give `group` to the decoder alone (dist.new_group):
        the decode then runs on a side thread beside the sampler's collectives."""

        def make() -> FrameDecoder:
            rt = self.runtime
            return ParallelStreamingDecoder(
                self.vae, group, rt.vae_tile_px, rt.vae_tile_batch, rt.vae_frame_chunk
            )

        self.make_decoder = make

    def _one_process_decoder(self) -> FrameDecoder:
        rt = self.runtime
        return stream_decoder(self.vae, rt.vae_tile_batch, rt.vae_tile_px, rt.vae_frame_chunk)

    @property
    def cached(self) -> bool:
        return self.use_cache and self.cfg.network.context_mode == "causal"

    def generate(
        self,
        req: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> GenerationResult:
        """Run one request; on_progress may raise to cancel (the exception propagates, no result)."""
        check_request(self.cfg, req)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with torch.inference_mode():
            timings = PhaseTimings()
            began = time.perf_counter()
            negative = (
                req.negative_prompt if req.negative_prompt is not None else self.cfg.sampler.negative_prompt
            )
            prompt = req.prompt + self.cfg.sampler.prompt_suffix
            text = self.text_encoder.encode([prompt, negative])  # rows: [cond; uncond]
            timings.text_s = time.perf_counter() - began
            sink = _ChunkSink(self.make_decoder(), self.dtype, timings, on_chunk)
            began = time.perf_counter()
            if self.runtime.overlap_decode:  # decode (on_chunk too) runs on a side thread; see vae_stream
                overlapped = OverlappedSink(sink, self.device)
                try:
                    self._sample(req, text, overlapped, on_progress)
                    timings.sampling_s = time.perf_counter() - began
                finally:
                    overlapped.close()
            else:
                self._sample(req, text, sink, on_progress)
                timings.sampling_s = time.perf_counter() - began - timings.decode_s
        frames = np.concatenate(sink.chunks)
        if frames.shape[0] != req.num_frames:
            raise RuntimeError(f"decoded {frames.shape[0]} frames, expected {req.num_frames}")
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0
        return GenerationResult(
            frames=frames, seed=req.seed, timings=timings, flops=self._flops(req), peak_memory_bytes=peak
        )

    def _steps(self, req: GenerationRequest) -> tuple[tuple[int, ...], tuple[int, ...]]:
        sp = self.cfg.sampler
        return req.first_frame_steps or sp.first_frame_steps, req.later_frame_steps or sp.later_frame_steps

    def _sample(
        self,
        req: GenerationRequest,
        text: TextEmbeddings,
        sink: _ChunkSink | OverlappedSink,
        on_progress: ProgressCallback | None,
    ) -> None:
        steps_first, steps_later = self._steps(req)
        sample_video(
            self.denoiser,
            text,
            self.cfg,
            num_latent_frames=self.cfg.latent_frames(req.num_frames),
            full_hw=self.cfg.latent_grid(req.width, req.height),
            steps_first=steps_first,
            steps_later=steps_later,
            guidance_first=req.guidance_scale,
            guidance_later=req.video_guidance_scale,
            generator=torch.Generator("cpu").manual_seed(req.seed),
            device=self.device,
            dtype=self.dtype,
            use_cache=self.use_cache,
            on_latent=sink,
            on_step=on_progress,
        )

    def _flops(self, req: GenerationRequest) -> dict[str, float]:
        steps_first, steps_later = self._steps(req)
        breakdown = estimate_flops(
            self.cfg,
            width=req.width,
            height=req.height,
            num_frames=req.num_frames,
            first_frame_steps=steps_first,
            later_frame_steps=steps_later,
            cfg_batch=2,
            cached=self.cached,
        )
        return dict(breakdown.components)
