"""One real text -> MP4 generation under one set of runtime options, in its own process (issue "GPU speed").

    python bench/e2e_run.py --preset m4v-768p --frames 121 --graphs --overlap --out $OUT/e2e.jsonl
    python bench/e2e_run.py --preset tiny --frames 9 --device cpu          # CPU smoke run

Times VideoPipeline.generate (stand-in text encoder, random weights: the time does not depend on the weight
values) plus the H.264 encode of worker/encode.py, i.e. prompt in, MP4 bytes out. --check N first generates
N frames with the reference options and with the chosen ones (same seed) and records how far apart the videos
are (mean and max absolute 8-bit pixel difference, PSNR): an optimisation must not change the video beyond
bf16 noise. Appends one JSON line per run to --out, so a driver can run each variant in a fresh process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_common import with_single  # noqa: E402
from model.config import ModelConfig, get_preset  # noqa: E402
from model.pipeline import VideoPipeline  # noqa: E402
from model.pipeline_types import GenerationRequest  # noqa: E402
from model.runtime import RuntimeOptions  # noqa: E402

try:  # PyAV is not on the offline GPU machine: there the MP4 encode is left out and said so
    from worker.encode import encode_mp4
except ImportError:
    encode_mp4 = None  # type: ignore[assignment]


def options(args: argparse.Namespace) -> RuntimeOptions:
    return RuntimeOptions(
        attention_backend=args.attention,
        compile=args.compile,
        cuda_graphs=args.graphs,
        graph_lean_capture=args.lean_capture,
        vae_tile_batch=args.tiles,
        vae_tile_px=args.tile_px,
        vae_frame_chunk=args.frame_chunk,
        overlap_decode=args.overlap,
        vae_channels_last=args.vae_cl,
        cudnn_benchmark=args.cudnn_bench,
        graph_fixed_shapes=args.fixed_shapes,
        graph_context_bucket=args.context_bucket,
        graph_max_tokens=args.graph_max_tokens,
    )


BASELINE = "attn-baseline"  # m4v-768p with attention single blocks: same sampler and context caching


def preset(name: str) -> ModelConfig:
    """A preset by name; "attn-baseline" is M4V's own attention baseline (the attn-768p preset follows
    PyramidFlow's maths for its real weights, so it is not the like-for-like comparison)."""
    if name == BASELINE:
        return with_single(get_preset("m4v-768p"), "attention")
    return get_preset(name)


def pipeline(args: argparse.Namespace, runtime: RuntimeOptions, frames: int) -> VideoPipeline:
    cfg = preset(args.preset)
    cfg = dataclasses.replace(cfg, max_frames=max(cfg.max_frames, frames))
    torch.manual_seed(0)  # same random weights in every process and for both sides of --check
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    return VideoPipeline.from_preset(
        cfg,
        device=args.device,
        dtype=dtype,
        scan_backend="auto",
        stand_in_text=True,
        runtime=runtime,
        allow_random_weights=True,  # a step's time does not depend on the weight values
    )


def request(pipe: VideoPipeline, frames: int) -> GenerationRequest:
    w, h = pipe.cfg.default_resolution
    return GenerationRequest(
        prompt="a red fox running through snow", width=w, height=h, num_frames=frames, seed=0
    )


def check(args: argparse.Namespace, runtime: RuntimeOptions) -> dict[str, float]:
    videos = []
    # the reference decodes with the variant's tile size: tiling changes the function by design (a frame
    # that fits one tile is decoded exactly, tests/model/test_runtime_options.py), the rest must not
    for opts in (RuntimeOptions(vae_tile_px=runtime.vae_tile_px), runtime):
        pipe = pipeline(args, opts, args.check)
        videos.append(pipe.generate(request(pipe, args.check)).frames.astype(np.float64))
        del pipe
    diff = np.abs(videos[0] - videos[1])
    mse = float((diff**2).mean())
    return {
        "check_frames": args.check,
        "check_mean_abs_diff": round(float(diff.mean()), 4),
        "check_max_abs_diff": float(diff.max()),
        "check_psnr_db": round(10 * math.log10(255**2 / mse), 2) if mse > 0 else float("inf"),
    }


class PhaseTimers:
    """--phases: wall time of the context passes and of the graph captures (each with its warm-up step),
    CUDA-synchronised before and after, so the rest of sampling_s is the steps. Bench-only: wraps the
    pipeline's own methods on this instance; costs two synchronisations per (unit, stage)."""

    def __init__(self, pipe: VideoPipeline, cuda: bool) -> None:
        self.seconds = {"context_s": 0.0, "capture_s": 0.0}
        self.cuda = cuda
        net = pipe.network
        net.prepare_context = self._timed(net.prepare_context, "context_s")  # type: ignore[method-assign]
        net._graphs._capture = self._timed(net._graphs._capture, "capture_s")  # type: ignore[method-assign]

    def _timed(self, fn: Any, key: str) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.cuda:
                    torch.cuda.synchronize()
                self.seconds[key] += time.perf_counter() - began

        return wrapped

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="m4v-768p")
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--device", default="cuda")
    p.add_argument("--attention", default="sdpa_mask")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--graphs", action="store_true")
    p.add_argument("--lean-capture", action="store_true", help="one warm-up per capture, its output reused")
    p.add_argument("--fixed-shapes", action="store_true", help="a graph per (stage, context bucket)")
    p.add_argument("--context-bucket", type=int, default=1024, help="context capacity step (fixed shapes)")
    p.add_argument("--graph-max-tokens", type=int, default=None, help="graphs only for steps this small")
    p.add_argument("--overlap", action="store_true")
    p.add_argument("--tiles", type=int, default=1)
    p.add_argument("--tile-px", type=int, default=None, help="VAE decode tile size (default: the VAE's)")
    p.add_argument(
        "--frame-chunk", type=int, default=None, help="VAE decode: frames per block call (default: all)"
    )
    p.add_argument("--vae-cl", action="store_true", help="VAE in channels_last_3d")
    p.add_argument("--cudnn-bench", action="store_true", help="torch.backends.cudnn.benchmark")
    p.add_argument("--check", type=int, default=0, help="frames of the reference-vs-variant comparison")
    p.add_argument(
        "--warmup", type=int, default=0, help="frames generated first in this process (Triton JIT, autotune)"
    )
    p.add_argument("--phases", action="store_true", help="time context passes and captures (synchronised)")
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    runtime = options(args)
    result: dict[str, object] = {"preset": args.preset, "frames": args.frames, "variant": runtime.label()}
    result["label"] = args.label or f"{args.preset} {runtime.label()}"
    if args.check:
        result.update(check(args, runtime))
    pipe = pipeline(args, runtime, args.frames)
    timers = PhaseTimers(pipe, args.device == "cuda") if args.phases else None
    if args.warmup:
        pipe.generate(request(pipe, args.warmup))
        result["warmup_frames"] = args.warmup
    if timers is not None:
        timers.reset()
        captures_before = pipe.network._graphs.captures
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
    began = time.perf_counter()
    out = pipe.generate(request(pipe, args.frames))
    mp4_bytes = len(encode_mp4(out.frames, pipe.cfg.default_fps).data) if encode_mp4 is not None else None
    seconds = time.perf_counter() - began
    t = out.timings
    result.update(
        {
            "seconds": round(seconds, 2),
            "text_s": round(t.text_s, 3),
            "sampling_s": round(t.sampling_s, 2),
            "decode_s": round(t.decode_s, 2),
            "mp4_bytes": mp4_bytes,  # None: no PyAV here, seconds exclude the H.264 encode
            "peak_mem_gb": round(out.peak_memory_bytes / 1e9, 2),
            "vae": pipe.cfg.vae.kind,  # the 768p presets decode with PyramidFlow's VAE since 2026-12-06
            "graph_fallback": pipe.network._graphs.failed,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "torch": torch.__version__,
        }
    )
    if timers is not None:
        result.update({k: round(v, 2) for k, v in timers.seconds.items()})
        result["captures"] = pipe.network._graphs.captures - captures_before
    print(json.dumps(result), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
