"""One video on 1 vs 2 vs 4 GPUs (issue 19): time, speed-up and peak memory per GPU, each variant in its own
process group started in its own fresh process.

    python bench/parallel_bench.py --out bench/results/parallel.jsonl   # m4v-768p, 121 frames, NCCL
    python bench/parallel_bench.py --dry-run --out /tmp/parallel.jsonl  # CPU, tiny preset, gloo

Variants: 1 rank = the plain pipeline; 2 ranks = CFG-parallel (model/parallel/cfg.py); 4 (8) ranks = CFG x
sequence-parallel on a 2 x 2 (2 x 4) mesh (model/parallel/mesh.py), whose cached steps run eagerly: the
split step has no CUDA-graph capture yet, so "graphs" in its line is false. Weights are random and the text
encoder a stand-in (a step's time does not depend on the values). Each rank generates the same request
after one short warm-up generation (Triton JIT, graphs); rank 0 appends one JSON line per variant to --out,
and the 1-rank video is kept so the others report how far their frames are from it (max absolute 8-bit
difference). The driver prints a markdown table at the end.
NVLink multicast stays off in every child (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import get_preset  # noqa: E402
from model.parallel.group import child_env, run_ranks  # noqa: E402
from model.parallel.mesh import cfg_seq_denoiser  # noqa: E402
from model.pipeline import VideoPipeline  # noqa: E402
from model.pipeline_types import GenerationRequest  # noqa: E402
from model.runtime import RuntimeOptions  # noqa: E402

SUPPORTED = {1: "single", 2: "cfg", 4: "cfg+seq2", 8: "cfg+seq4"}


def card(device: str) -> str:
    return torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"


def build(args: argparse.Namespace, device: str, frames: int) -> VideoPipeline:
    cfg = get_preset(args.preset)
    cfg = dataclasses.replace(cfg, max_frames=max(cfg.max_frames, frames))
    torch.manual_seed(0)  # the same random weights on every rank and in every variant
    cuda = device.startswith("cuda")
    runtime = RuntimeOptions(cuda_graphs=cuda and args.graphs, overlap_decode=cuda)
    return VideoPipeline.from_preset(
        cfg,
        device=device,
        dtype=torch.bfloat16 if cuda else torch.float32,
        stand_in_text=True,
        runtime=runtime,
        allow_random_weights=True,
    )


def request(pipe: VideoPipeline, frames: int) -> GenerationRequest:
    w, h = pipe.cfg.default_resolution
    return GenerationRequest(
        prompt="a red fox running through snow", width=w, height=h, num_frames=frames, seed=0
    )


def timed(pipe: VideoPipeline, args: argparse.Namespace) -> tuple[float, Any]:
    if args.warmup:
        pipe.generate(request(pipe, args.warmup))
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)
        torch.cuda.reset_peak_memory_stats(pipe.device)
    began = time.perf_counter()
    result = pipe.generate(request(pipe, args.frames))
    return time.perf_counter() - began, result


def record(args: argparse.Namespace, ranks: int, seconds: float, result: Any, peaks: list[int]) -> None:
    line: dict[str, Any] = {
        "card": card(args.device),
        "torch": torch.__version__,
        "preset": args.preset,
        "frames": args.frames,
        "ranks": ranks,
        "mode": SUPPORTED[ranks] + (f"/{args.seq_attention}" if ranks > 2 else ""),
        "graphs": args.graphs and args.device == "cuda" and ranks <= 2,
        "seconds": round(seconds, 3),
        "sampling_s": round(result.timings.sampling_s, 3),
        "peak_mem_gb_per_rank": [round(p / 2**30, 2) for p in peaks],
    }
    ref = Path(args.workdir) / "frames-1.npy"
    if ranks == 1:
        np.save(ref, result.frames)
    elif ref.exists():
        line["max_abs_diff_vs_1"] = float(np.abs(np.load(ref).astype(int) - result.frames.astype(int)).max())
    with open(args.out, "a") as f:
        f.write(json.dumps(line) + "\n")


def parallel_rank(rank: int, world: int, args: argparse.Namespace) -> None:
    device = f"cuda:{rank}" if args.device == "cuda" else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    pipe = build(args, device, args.frames)
    if world == 2:
        pipe.parallel_cfg()
    else:
        pipe.denoiser = cfg_seq_denoiser(pipe.network, world // 2, args.seq_attention)
    seconds, result = timed(pipe, args)
    peak = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else 0
    peaks: list[Any] = [None] * world
    dist.all_gather_object(peaks, peak)
    if rank == 0:
        record(args, world, seconds, result, peaks)


def run_variant(args: argparse.Namespace) -> None:
    ranks = args.variant
    if ranks not in SUPPORTED:
        raise SystemExit(f"--ranks: {ranks} is not one of {sorted(SUPPORTED)}")
    if ranks == 1:
        pipe = build(args, args.device, args.frames)
        seconds, result = timed(pipe, args)
        peak = torch.cuda.max_memory_allocated(pipe.device) if pipe.device.type == "cuda" else 0
        record(args, 1, seconds, result, [peak])
        return
    run_ranks(parallel_rank, ranks, (args,), backend="nccl" if args.device == "cuda" else "gloo")


def table(out: Path, preset: str, frames: int) -> str:
    lines = [json.loads(s) for s in out.read_text().splitlines() if s.strip()]
    lines = [r for r in lines if r["preset"] == preset and r["frames"] == frames]
    base = next((r["seconds"] for r in lines if r.get("ranks") == 1 and "seconds" in r), None)
    rows = [
        "| ranks | mode | seconds | speed-up | peak GB per GPU | max diff vs 1 |",
        "|---|---|---|---|---|---|",
    ]
    for r in lines:
        speedup = f"{base / r['seconds']:.2f}x" if base else "?"
        peaks = ", ".join(str(p) for p in r["peak_mem_gb_per_rank"])
        diff = r.get("max_abs_diff_vs_1", "")
        rows.append(f"| {r['ranks']} | {r['mode']} | {r['seconds']} | {speedup} | {peaks} | {diff} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON lines are appended here")
    p.add_argument("--preset", default="m4v-768p")
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--ranks", default="1,2,4", help="variants, comma-separated")
    p.add_argument("--warmup", type=int, default=9, help="frames generated first in every rank (0: none)")
    p.add_argument(
        "--seq-attention",
        choices=["gather_kv", "ulysses"],
        default="gather_kv",
        help="MM-DiT attention of the 4- and 8-rank variants (ulysses: heads must divide by ranks / 2)",
    )
    p.add_argument("--no-graphs", dest="graphs", action="store_false", help="CUDA graphs off")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workdir", default="", help="where the 1-rank video is kept (default: next to --out)")
    p.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny preset, 5 frames, gloo: the script itself"
    )
    p.add_argument("--variant", type=int, default=0, help=argparse.SUPPRESS)  # set by the driver
    args = p.parse_args()
    if args.dry_run:
        args.device, args.preset, args.frames, args.warmup = "cpu", "tiny", 5, 0
    args.workdir = args.workdir or str(Path(args.out).resolve().parent)
    if args.variant:
        run_variant(args)
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for ranks in [int(r) for r in args.ranks.split(",")]:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", str(ranks)]
        print(f"[parallel_bench] {ranks} rank(s) on {card(args.device)}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env=child_env())
    print(table(Path(args.out), args.preset, args.frames), file=sys.stderr)


if __name__ == "__main__":
    main()
