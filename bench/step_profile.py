"""Where the GPU time of one cached step and of one VAE decode goes: kernel time by kind, from torch.profiler.

    python bench/step_profile.py --out $OUT/profile.json                 # GPU (issue "GPU speed")
    python bench/step_profile.py --device cpu --preset tiny --unit 2      # smoke run of the script

For the preset's cached step at (unit, stage) for each stage, and for the streaming decode of one later latent
frame at each --tile-px: the summed kernel durations per kind (gemm, attention, scan, conv, norm, copy,
elementwise, other), the 12 longest kernels, and the wall time of the same work (CUDA events, graphed step).
Kernel time is what the GPU does; wall time minus kernel time is what the host or gaps cost. The step is
profiled eagerly (same kernels as its graph, each one visible to the profiler).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_common import Clock, build_network, shape_inputs  # noqa: E402
from bench.cached_step_bench import cfg_text  # noqa: E402
from model.config import get_preset  # noqa: E402
from model.ssm_kernels import resolve_backend  # noqa: E402
from model.step_graphs import StepGraphs  # noqa: E402
from model.vae import CausalVAE  # noqa: E402
from model.vae_stream import stream_decoder  # noqa: E402

# first match wins; kernel names are lower-cased
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
    ("scan", ("chunk", "state_passing", "ssd", "selective")),
    ("conv1d", ("causal_conv1d",)),
    ("conv", ("conv", "implicit_gemm", "fprop", "dgrad", "winograd", "nchw", "ndhwc", "cudnn")),
    ("gemm", ("gemm", "xmma", "cutlass", "nvjet", "sm90", "ampere", "matmul")),
    ("norm", ("norm",)),
    ("copy", ("copy", "cat", "memcpy", "memset", "fill", "index", "gather", "scatter")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce", "triton")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((k for k, keys in KINDS if any(s in low for s in keys)), "other")


def kernel_table(prof: object, reps: int) -> dict[str, object]:
    """Per-kind kernel milliseconds per repetition and the 12 longest kernels."""
    per_kind: dict[str, float] = defaultdict(float)
    per_name: dict[str, float] = defaultdict(float)
    for ev in prof.events():  # type: ignore[attr-defined]
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        ms = ev.time_range.elapsed_us() / 1e3 / reps  # a kernel's own duration, us -> ms
        per_kind[kind_of(ev.name)] += ms
        per_name[ev.name[:120]] += ms
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:12]
    return {
        "kernel_ms": round(sum(per_kind.values()), 3),
        "by_kind_ms": {k: round(v, 3) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])},
        "top_kernels_ms": [[n, round(v, 3)] for n, v in top],
    }


def profiled(fn, device: torch.device, reps: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    with profile(activities=acts) as prof:
        for _ in range(reps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return kernel_table(prof, reps)


def capture_ms(graphs: StepGraphs, x, t, cache, device: torch.device, reps: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of a lean capture (its warm-up step, the recording, the instantiation): what each
    (unit, stage) pays before its replays; a new cache object per repetition forces a new capture."""
    times = []
    for _ in range(reps):
        fresh = copy.copy(cache)  # same tensors, new identity: StepGraphs keys a graph on the cache object
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        graphs.run(x, t, fresh)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return 1e3 * statistics.median(times)


def step_row(net, clock: Clock, text, x, t, history, full_hw, reps: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """One stage: graphed and eager wall time, the capture's, eager kernels by kind, the context pass's."""
    cache = net.prepare_context(text=text, history=history, full_hw=full_hw)
    graphs = StepGraphs(net._forward_cached, warmup=1, reuse_warmup=True)
    row: dict[str, object] = {
        "capture_ms": round(capture_ms(graphs, x, t, cache, x.device, reps), 3),
        "graph_wall_ms": round(1e3 * clock.median(lambda: graphs.run(x, t, cache)), 3),
        "eager_wall_ms": round(1e3 * clock.median(lambda: net(x, t, cache=cache)), 3),
    }
    row.update(profiled(lambda: net(x, t, cache=cache), x.device, reps))
    prepare = lambda: net.prepare_context(text=text, history=history, full_hw=full_hw)  # noqa: E731
    row["context_wall_ms"] = round(1e3 * clock.median(prepare), 3)
    row["context"] = profiled(prepare, x.device, reps)  # the context pass's kernels by kind
    return row


@torch.inference_mode()
def step_rows(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict[str, object]]:
    cfg = get_preset(args.preset)
    net = build_network(cfg, device, dtype, resolve_backend("auto", device))
    text = cfg_text(cfg, device, dtype)
    res = cfg.default_resolution
    clock = Clock(device, warmup=2, reps=args.reps)
    rows: list[dict[str, object]] = []
    for stage in range(cfg.sampler.num_stages):
        x, history = shape_inputs(cfg, res, args.unit, stage, device, dtype)
        t = torch.full((2,), 500.0, device=device)
        row: dict[str, object] = {
            "what": "cached_step",
            "preset": args.preset,
            "unit": args.unit,
            "stage": stage,
        }
        row.update(step_row(net, clock, text, x, t, history, cfg.latent_grid(*res), args.reps))
        rows.append(row)
    return rows


def decode_row(dec, z: torch.Tensor, clock: Clock, reps: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    dec.decode_next(z)  # the first (image) frame; the later ones fill the causal caches
    dec.decode_next(z)
    row: dict[str, object] = {"wall_ms": round(1e3 * clock.median(lambda: dec.decode_next(z)), 3)}
    row.update(profiled(lambda: dec.decode_next(z), z.device, reps))
    return row


@torch.inference_mode()
def decode_rows(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> list[dict[str, object]]:
    cfg = get_preset(args.preset)
    vae = CausalVAE(cfg.vae, device=device, dtype=dtype).eval()
    h, w = cfg.latent_grid(*cfg.default_resolution)
    z = torch.randn(1, cfg.vae.latent_channels, 1, h, w, device=device, dtype=dtype)
    clock = Clock(device, warmup=0, reps=args.reps)
    rows: list[dict[str, object]] = []
    for px in args.tile_px:
        row: dict[str, object] = {
            "what": "vae_decode_later_frame",
            "preset": args.preset,
            "tile_px": px or None,
        }
        row.update(decode_row(stream_decoder(vae, tile_px=px or None), z, clock, args.reps))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="m4v-768p")
    ap.add_argument("--unit", type=int, default=15, help="unit (latent frame index) of the cached steps")
    ap.add_argument("--tile-px", type=int, nargs="*", default=[0, 1280], help="0: the VAE's own tile size")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--skip", choices=["steps", "decode"], default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = [] if args.skip == "steps" else step_rows(args, device, dtype)
    rows += [] if args.skip == "decode" else decode_rows(args, device, dtype)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    for row in rows:
        row.update(device=name, torch=torch.__version__)
        print(json.dumps(row))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
