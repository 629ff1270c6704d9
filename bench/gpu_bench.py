"""GPU benchmark of M4V vs the attention baseline (issue "GPU performance"); see bench/README.md.

python bench/gpu_bench.py --out bench/results            # full: every (unit, stage) of 121 frames, 768p
python bench/gpu_bench.py --out bench/results --quick    # sampled units, < 3 min on an H100
python bench/gpu_bench.py --dry-run                      # CPU, tiny preset: proves the script end to end

Weights are random: a forward's time does not depend on the weight values (same shapes, same kernels).
Per-step times are medians over repeats after warm-up (CUDA events on GPU). A cached step's time at unit k
does not depend on the video length, so whole-video sampling times for every length are ESTIMATES assembled
from per-(unit, stage) step and context times (units not measured are interpolated linearly); --e2e runs real
VideoPipeline generations on top. FLOPs come from model/flops.py (dense attention counting).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_common import Clock, build_network, shape_inputs, stand_in_text, with_single  # noqa: E402
from model import flops  # noqa: E402
from model.config import ModelConfig, get_preset  # noqa: E402
from model.network import M4VNetwork  # noqa: E402
from model.pipeline_types import GenerationRequest  # noqa: E402
from model.ssm_kernels import kernels_available  # noqa: E402
from model.vae import CausalVAE  # noqa: E402

log = logging.getLogger("gpu_bench")


@dataclass
class ShapeTiming:
    """Medians (s) at one (unit, stage), batch 2; FLOPs from model/flops.py."""

    unit: int
    stage: int
    step_s: float  # cached step (current frame only); uncached models: the full step
    context_s: float  # prepare_context, once per (unit, stage); 0 when uncached
    step_flops: float
    context_flops: float


def time_shape(
    net: M4VNetwork, cfg: ModelConfig, res: tuple[int, int], unit: int, stage: int, cached: bool, clock: Clock
) -> ShapeTiming:
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    text = stand_in_text(cfg, device, dtype)
    x, hist = shape_inputs(cfg, res, unit, stage, device, dtype)
    full_hw, t = cfg.latent_grid(*res), torch.full((2,), 500.0, device=device)
    kw = {"width": res[0], "height": res[1], "unit": unit, "stage": stage, "batch": 2}
    with torch.inference_mode():
        if not cached:
            step = clock.median(lambda: net(x, t, text=text, history=hist, full_hw=full_hw))
            return ShapeTiming(unit, stage, step, 0.0, flops.step_flops(cfg, cached=False, **kw).total, 0.0)
        ctx_s = clock.median(lambda: net.prepare_context(text=text, history=hist, full_hw=full_hw))
        cache = net.prepare_context(text=text, history=hist, full_hw=full_hw)
        step = clock.median(lambda: net(x, t, cache=cache))
    return ShapeTiming(
        unit,
        stage,
        step,
        ctx_s,
        flops.step_flops(cfg, cached=True, **kw).total,
        flops.context_flops(cfg, **kw).total,
    )


def interpolate(table: list[ShapeTiming], unit: int, stage: int) -> ShapeTiming:
    """Measured entry, or linear interpolation in the unit index between the nearest measured units."""
    rows = sorted((r for r in table if r.stage == stage), key=lambda r: r.unit)
    exact = [r for r in rows if r.unit == unit]
    if exact:
        return exact[0]
    lo = max((r for r in rows if r.unit < unit), key=lambda r: r.unit, default=rows[0])
    hi = min((r for r in rows if r.unit > unit), key=lambda r: r.unit, default=rows[-1])
    a = 0.0 if hi.unit == lo.unit else (unit - lo.unit) / (hi.unit - lo.unit)

    def mix(f: str) -> float:
        return (1 - a) * getattr(lo, f) + a * getattr(hi, f)

    return ShapeTiming(unit, stage, mix("step_s"), mix("context_s"), mix("step_flops"), mix("context_flops"))


def sampling_estimate(cfg: ModelConfig, table: list[ShapeTiming], units: int) -> tuple[float, float]:
    """(seconds, FLOPs) of the sampler over `units` latent frames from the per-shape table."""
    seconds = work = 0.0
    for unit in range(units):
        steps = cfg.sampler.first_frame_steps if unit == 0 else cfg.sampler.later_frame_steps
        for stage, n in enumerate(steps):
            r = interpolate(table, unit, stage)
            seconds += n * r.step_s + r.context_s
            work += n * r.step_flops + r.context_flops
    return seconds, work


def time_decode(cfg: ModelConfig, res: tuple[int, int], device: torch.device, dtype: torch.dtype,
                clock: Clock) -> tuple[float, float]:  # fmt: skip
    """(first latent frame, each later latent frame) seconds of the streaming, tiled VAE decode, batch 1."""
    vae = CausalVAE(cfg.vae, device=device, dtype=dtype).eval()
    h, w = cfg.latent_grid(*res)
    z = torch.randn(1, cfg.vae.latent_channels, 1, h, w, device=device, dtype=dtype)
    with torch.inference_mode():
        first = clock.median(lambda: vae.stream_decoder().decode_next(z))
        dec = vae.stream_decoder()
        dec.decode_next(z)
        later = clock.median(lambda: dec.decode_next(z))
    return first, later


def time_mp4(frames: int, res: tuple[int, int], fps: int) -> float:
    """H.264 yuv420p encode with PyAV (what worker/encode.py does), CPU; noise-free gradient frames."""
    import io

    import av

    w, h = res
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    began = time.perf_counter()
    with av.open(io.BytesIO(), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(img, i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return time.perf_counter() - began


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, clock: Clock) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / clock.median(lambda: a @ b) / 1e12


def run_e2e(cfg: ModelConfig, frames: int, device: torch.device, dtype: torch.dtype, backend: str,
            cached: bool) -> tuple[float, int]:  # fmt: skip
    """A real VideoPipeline generation (random weights, stand-in text encoder): (seconds, peak bytes)."""
    from model.pipeline import VideoPipeline

    cfg = dataclasses.replace(cfg, max_frames=max(cfg.max_frames, frames))
    pipe = VideoPipeline.from_preset(
        cfg,
        device=device,
        dtype=dtype,
        scan_backend=backend,
        use_cache=cached,
        stand_in_text=True,
        allow_random_weights=True,  # timing only
    )
    w, h = cfg.default_resolution
    began = time.perf_counter()
    result = pipe.generate(
        GenerationRequest(prompt="a red fox", width=w, height=h, num_frames=frames, seed=0)
    )
    return time.perf_counter() - began, result.peak_memory_bytes


def lengths_for(cfg: ModelConfig) -> tuple[int, int, int]:
    """The benchmark's three video lengths: 121/241/481 frames at 768p (5/10/20 s), 4x/2x/1x the VAE's
    temporal factor scaled down for small presets (tiny: 9/17/33)."""
    if cfg.vae.temporal_factor == 8:
        return 121, 241, 481
    tf = cfg.vae.temporal_factor
    return 1 + 2 * tf, 1 + 4 * tf, 1 + 8 * tf


def units_to_measure(n_first: int, n_last: int, quick: bool) -> list[int]:
    """All units of the first length (sampled with --quick), then a few up to the longest length."""
    first = sorted({0, 1, 2, n_first // 2, n_first - 1}) if quick else list(range(n_first))
    beyond = [u for u in (n_last // 2, 3 * n_last // 4, n_last - 1) if u >= n_first]
    return sorted({u for u in first + beyond if u < n_last})


def video_seconds(total: float, frames: int, fps: int) -> float:
    return total / ((frames - 1) / fps)


@dataclass
class Setup:
    device: torch.device
    dtype: torch.dtype
    backend: str
    clock: Clock
    res: tuple[int, int]


def measure_model(cfg: ModelConfig, s: Setup, units: list[int], cached: bool) -> list[ShapeTiming]:
    net = build_network(cfg, s.device, s.dtype, s.backend)
    rows = []
    for unit in units:
        for stage in range(cfg.sampler.num_stages):
            r = time_shape(net, cfg, s.res, unit, stage, cached, s.clock)
            log.info("%-22s cached=%-5s unit %2d stage %d: step %8.2f ms  context %8.2f ms  %7.1f TFLOP/s",
                     cfg.name, cached, unit, stage, 1e3 * r.step_s, 1e3 * r.context_s,
                     r.step_flops / r.step_s / 1e12)  # fmt: skip
            rows.append(r)
    del net
    if s.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"torch": torch.__version__}
    for name in ("triton", "mamba_ssm"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - optional packages, any import failure means "not installed"
            out[name] = None
    return out


def markdown(results: dict[str, object]) -> str:
    keys = [k for k, v in results.items() if isinstance(v, int | float | str) or v is None]
    lines = ["| metric | value |", "|---|---|"]
    for k in keys:
        v = results[k]
        lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--preset", default="m4v-768p")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="sampled units, fewer repeats (< 3 min on an H100)")
    p.add_argument("--dry-run", action="store_true", help="= --device cpu --preset tiny --quick")
    p.add_argument("--e2e", default="", help="comma-separated frame counts for real VideoPipeline runs")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument(
        "--variants", default="", help="'all' or names from bench/variants.py: RuntimeOptions timings"
    )
    p.add_argument("--variants-only", action="store_true", help="skip the main benchmark, time variants only")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.preset, args.quick = "cpu", "tiny", True
        args.warmup = 0 if args.warmup is None else args.warmup
        args.reps = 1 if args.reps is None else args.reps
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --dry-run (or --device cpu --preset tiny) on a CPU machine")
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    backend = "kernel" if cuda and kernels_available() else "ref"
    card = torch.cuda.get_device_name(device) if cuda else "cpu"
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    reps = args.reps if args.reps is not None else (3 if args.quick else 10)
    cfg_m = with_single(get_preset(args.preset), "mmdim")
    cfg_a = with_single(get_preset(args.preset), "attention")
    s = Setup(device, dtype, backend, Clock(device, warmup, reps), cfg_m.default_resolution)
    log.info("card %s | %s | scan backend %s | %s | RANDOM weights: timing does not depend on weight values",
             card, dtype, backend, versions())  # fmt: skip
    lengths = lengths_for(cfg_m)
    n = [cfg_m.latent_frames(f) for f in lengths]
    units = units_to_measure(n[0], n[-1], args.quick)
    first_units = [u for u in units if u < n[0]]
    matmul = matmul_tflops(device, dtype, 8192 if cuda else 1024, s.clock)
    log.info("bf16 matmul ceiling: %.1f TFLOP/s", matmul)
    variants = None
    if args.variants or args.variants_only:
        from bench.variants import run_variants, table

        variants = run_variants(cfg_m, cfg_a, s, args.variants or "all", n[0] - 1)
        log.info("\n%s", table(variants))
        if args.variants_only:
            meta = {"card": card, **versions(), "matmul_tflops": matmul, "dtype": str(dtype)}
            return write_results(args, card, {**meta, "scan_backend": backend, "variants": variants})

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    m_cached = measure_model(cfg_m, s, units, cached=True)
    peak_shapes = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0
    m_uncached = measure_model(cfg_m, s, first_units, cached=False)
    a_cached = measure_model(cfg_a, s, units, cached=True)
    dec_first, dec_later = time_decode(cfg_m, s.res, device, dtype, s.clock)

    def e2e_estimate(table: list[ShapeTiming], frames: int) -> float:
        units_f = cfg_m.latent_frames(frames)
        sampling, _ = sampling_estimate(cfg_m, table, units_f)
        decode = dec_first + (units_f - 1) * dec_later
        return sampling + decode + time_mp4(frames, s.res, cfg_m.default_fps)

    est = {f: e2e_estimate(m_cached, f) for f in lengths}
    attn_est = {f: e2e_estimate(a_cached, f) for f in lengths}
    uncached_121 = e2e_estimate(m_uncached, lengths[0])
    stage2 = [r for r in m_cached if r.stage == cfg_m.sampler.num_stages - 1 and r.unit < n[0]]
    achieved = sum(r.step_flops for r in stage2) / sum(r.step_s for r in stage2) / 1e12
    w, h = s.res
    red = {f: flops.mixer_flop_reduction(cfg_m, cfg_a, width=w, height=h, num_frames=f) for f in lengths[:2]}
    results: dict[str, object] = {
        "card": card,
        **versions(),
        "device": str(device),
        "dtype": str(dtype),
        "scan_backend": backend,
        "preset": args.preset,
        "quick": args.quick,
        "lengths": list(lengths),  # the keys' 121f/241f/481f mean these frame counts (tiny: 9/17/33)
        "estimated": "e2e_* = per-(unit, stage) medians summed over the schedule + VAE decode + MP4 encode",
        "e2e_121f_s": est[lengths[0]],
        "e2e_121f_s_uncached": uncached_121,
        "attn_e2e_121f_s": attn_est[lengths[0]],
        "speedup_121f": attn_est[lengths[0]] / est[lengths[0]],
        "speedup_481f": attn_est[lengths[2]] / est[lengths[2]],
        "e2e_241f_s": est[lengths[1]],
        "e2e_481f_s": est[lengths[2]],
        "mixer_flop_reduction_121f": red[lengths[0]],
        "mixer_flop_reduction_241f": red[lengths[1]],
        "cost_per_video_second_ratio_241_121": video_seconds(est[lengths[1]], lengths[1], cfg_m.default_fps)
        / video_seconds(est[lengths[0]], lengths[0], cfg_m.default_fps),
        "vae_decode_first_s": dec_first,
        "vae_decode_later_s": dec_later,
        "achieved_tflops_stage2": achieved,
        "mfu_stage2": achieved / matmul,
        "peak_mem_gb_121f": peak_shapes,
        "matmul_tflops": matmul,
    }
    for frames in [int(f) for f in args.e2e.split(",") if f]:
        for name, cfg in (("m4v", cfg_m), ("attn", cfg_a)):
            seconds, peak = run_e2e(cfg, frames, device, dtype, backend, cached=True)
            results[f"{name}_e2e_{frames}f_s_measured"] = seconds
            results[f"{name}_peak_mem_gb_{frames}f_measured"] = peak / 2**30
            log.info("measured e2e %s %d frames: %.2f s", name, frames, seconds)
    if variants is not None:
        results["variants"] = variants
    results["tables"] = {
        "m4v_cached": [dataclasses.asdict(r) for r in m_cached],
        "m4v_uncached": [dataclasses.asdict(r) for r in m_uncached],
        "attn_cached": [dataclasses.asdict(r) for r in a_cached],
    }
    return write_results(args, card, results)


def write_results(args: argparse.Namespace, card: str, results: dict[str, object]) -> dict[str, object]:
    args.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in card).strip("-").lower()
    suffix = "-variants" if args.variants_only else ""
    path = args.out / f"{dt.date.today().isoformat()}-{slug}{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    log.info("\n%s\n\nwrote %s", markdown(results), path)
    return results


if __name__ == "__main__":
    main()
