"""Time one training step of the tiny preset's network (issue "The bundled tiny model": >= 15 steps/s at
batch 512 on one H100) under one combination of options, in its own process:

    python bench/train_step_bench.py --backend triton --layout all --graph --out $OUT/train_step.jsonl

The step is train_network's own (model/train/train_step.py: flow_loss over 3 stages x unit groups, backward,
clip, fused AdamW, EMA) on random latents of the preset's shape; random weights (a step's time does not
depend on their values). With --profile, the 15 most expensive ops of one step are printed (CUDA time) with
the step's CPU and GPU totals: is the step bound by the host (launches) or by the device? Appends one JSON
line per run to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import get_preset  # noqa: E402
from model.text_encoder import TextEmbeddings  # noqa: E402
from model.train.flow_loss import UNIT_LAYOUTS, NetTrainConfig  # noqa: E402
from model.train.run import build_models  # noqa: E402
from model.train.train_step import TrainStep, step_generator  # noqa: E402


class RandomTextCache:
    """The TextCache interface (rows) over random embeddings of the preset's text shape."""

    def __init__(self, rows: int, tokens: int, dim: int, device: torch.device) -> None:
        g = torch.Generator().manual_seed(0)
        self.tokens = torch.randn(rows, tokens, dim, generator=g).to(device)
        self.mask = torch.ones(rows, tokens, dtype=torch.bool, device=device)
        self.mask[:, tokens // 2 :] = torch.rand(rows, tokens - tokens // 2, generator=g).to(device) < 0.3
        self.pooled = torch.randn(rows, dim, generator=g).to(device)

    def rows(self, idx: torch.Tensor) -> TextEmbeddings:
        return TextEmbeddings(tokens=self.tokens[idx], mask=self.mask[idx], pooled=self.pooled[idx])


class RandomLatents:
    """A batch source over random latents of the preset's shape and random caption rows."""

    def __init__(self, data: torch.Tensor, rows: int, g: torch.Generator) -> None:
        self.data, self.rows, self.g = data, rows, g

    def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.data.device
        idx = torch.randint(0, self.data.shape[0], (n,), generator=self.g, device=dev)
        rows = torch.randint(0, self.rows, (n,), generator=self.g, device=dev)
        return self.data[idx].float(), rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="ref", choices=["ref", "triton", "kernel"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--layout", default="random", choices=list(UNIT_LAYOUTS), help="unit layout of flow_loss")
    p.add_argument("--graph", action="store_true", help="the step as CUDA graphs (--layout all/cycle)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = get_preset("tiny")
    net, _ = build_models(cfg, device, seed=0, scan_backend=args.backend)
    tc = NetTrainConfig(
        batch=args.batch, compile=args.compile, unit_layout=args.layout, cuda_graph=args.graph, warmup=1
    )
    h, w = cfg.latent_grid(*cfg.default_resolution)
    frames = cfg.latent_frames(cfg.default_frames)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2048, cfg.vae.latent_channels, frames, h, w, generator=g).to(device, torch.float16)
    text = RandomTextCache(64, cfg.text.max_tokens, cfg.text.token_dim, device)
    if tc.compile:
        net.compile_blocks(dynamic=tc.compile_dynamic)
    g_dev = step_generator(device, 1, args.graph)
    source = RandomLatents(data, 64, g_dev)
    g_unit = torch.Generator().manual_seed(2)
    train_step = TrainStep(net, source, text, cfg, tc, device, g_dev, g_unit, phases=frames)  # type: ignore[arg-type]
    net.train()

    def step() -> torch.Tensor:
        return train_step()[0]["loss"]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    began = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    sync()
    warm_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - began
    result = {
        "backend": args.backend,
        "compile": args.compile,
        "layout": args.layout,
        "graph": args.graph,
        "graph_failed": train_step.failed,
        "batch": args.batch,
        "steps_per_s": round(args.steps / seconds, 3),
        "step_ms": round(1e3 * seconds / args.steps, 2),
        "warmup_s": round(warm_s, 1),
        "loss": round(loss.item(), 5),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device.type == "cuda" else None,
        "params": sum(p.numel() for p in net.parameters()),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if args.profile:
        result.update(profile(step, sync))
    print(json.dumps(result), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


def profile(step: object, sync: object) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    began = time.perf_counter()
    with profile(activities=acts) as prof:
        step()  # type: ignore[operator]
        sync()  # type: ignore[operator]
    wall = time.perf_counter() - began
    events = prof.key_averages()
    print(events.table(sort_by="cuda_time_total" if len(acts) > 1 else "cpu_time_total", row_limit=15))
    gpu_us = sum(e.self_device_time_total for e in events)
    launches = sum(
        e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx")
    )
    return {
        "profiled_wall_ms": round(1e3 * wall, 1),
        "gpu_kernel_ms": round(gpu_us / 1e3, 1),
        "launches": launches,
    }


if __name__ == "__main__":
    main()
