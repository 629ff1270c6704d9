"""The cached step at each pyramid stage of the last 121-frame unit, per attention backend, eager and graphed.

    python bench/cached_step_bench.py --out $OUT/cached_step.jsonl            # GPU (issue "GPU speed")

Stage 2 of the last unit is where sampling spends most of its time; stages 0 and 1 are two thirds of all
steps. For each (preset, attention backend, stage): prepare the context once, then the median of CUDA-event
timings of one cached step, eager and through StepGraphs (the sampler's CUDA graphs), how far each is from
the eager sdpa_mask output (max abs diff relative to its max abs), and the graphed step's share of the
measured bf16 matmul rate (mfu_graph; FLOPs from model/flops.py: the issue's "stage-2 step / matmul ceiling").
CFG batch 2 with the conditional prompt 40 tokens long and the unconditional one empty, as the sampler meets
them. One JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_common import Clock, build_network, shape_inputs, with_single  # noqa: E402
from bench.gpu_bench import matmul_tflops  # noqa: E402
from model import flops  # noqa: E402
from model.config import get_preset  # noqa: E402
from model.runtime import RuntimeOptions  # noqa: E402
from model.ssm_kernels import resolve_backend  # noqa: E402
from model.step_graphs import StepGraphs  # noqa: E402
from model.text_encoder import TextEmbeddings  # noqa: E402


def cfg_text(cfg, device: torch.device, dtype: torch.dtype) -> TextEmbeddings:  # type: ignore[no-untyped-def]
    lt = cfg.text.max_tokens
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, lt, dtype=torch.bool)
    mask[0, :40] = True  # the prompt
    mask[1, :1] = True  # the empty negative prompt: one token (end of sequence)
    return TextEmbeddings(
        torch.randn(2, lt, cfg.text.token_dim, generator=g).to(device, dtype),
        mask.to(device),
        torch.randn(2, cfg.text.pooled_dim, generator=g).to(device, dtype),
    )


@torch.inference_mode()
def case(net, clock: Clock, x, t, text, history, full_hw, ref) -> tuple[dict, torch.Tensor]:  # type: ignore[no-untyped-def]
    """One (network, stage): eager and graphed step times, their distance from ``ref`` (or from eager)."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cache = net.prepare_context(text=text, history=history, full_hw=full_hw)
    eager = net(x, t, cache=cache).float()
    ref = eager if ref is None else ref
    graphs = StepGraphs(net._forward_cached)
    graphed = graphs.run(x, t, cache).float()
    row = {
        "tokens": x.shape[-1] * x.shape[-2] // 4,
        "eager_ms": round(1e3 * clock.median(lambda: net(x, t, cache=cache)), 2),
        "graph_ms": round(1e3 * clock.median(lambda: graphs.run(x, t, cache)), 2),
        "graph_failed": graphs.failed,
        "rel_diff_eager": float((eager - ref).abs().max() / ref.abs().max()),
        "rel_diff_graph": float((graphed - ref).abs().max() / ref.abs().max()),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }
    return row, eager


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--presets", default="m4v-768p,attn-baseline")
    ap.add_argument("--backends", default="sdpa_mask,sdpa_split")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (--presets tiny, fp32)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    scan = resolve_backend("auto", device)
    clock = Clock(device, warmup=3, reps=10)
    ceiling = matmul_tflops(device, dtype, 8192 if device.type == "cuda" else 512, clock)  # TFLOP/s
    print(json.dumps({"matmul_tflops": round(ceiling, 1), "dtype": str(dtype)}), flush=True)
    for name in args.presets.split(","):
        base = get_preset("m4v-768p")
        cfg = with_single(base, "attention") if name == "attn-baseline" else get_preset(name)
        unit = cfg.latent_frames(args.frames) - 1
        text = cfg_text(cfg, device, dtype)
        torch.manual_seed(0)
        nets = {
            b: build_network(cfg, device, dtype, scan, RuntimeOptions(attention_backend=b))  # type: ignore[arg-type]
            for b in args.backends.split(",")
        }
        first = next(iter(nets.values())).state_dict()
        for net in nets.values():
            net.load_state_dict(first)
        for stage in range(cfg.sampler.num_stages):
            x, history = shape_inputs(cfg, cfg.default_resolution, unit, stage, device, dtype)
            t = torch.full((2,), 500.0, device=device)
            full_hw = cfg.latent_grid(*cfg.default_resolution)
            ref = None
            for backend, net in nets.items():
                row, out = case(net, clock, x, t, text, history, full_hw, ref)
                ref = out if ref is None else ref
                row.update({"preset": name, "attention": backend, "stage": stage, "unit": unit})
                w, h = cfg.default_resolution
                work = flops.step_flops(cfg, cached=True, width=w, height=h, unit=unit, stage=stage, batch=2)
                row["step_tflop"] = round(work.total / 1e12, 4)
                rate = work.total / (row["graph_ms"] / 1e3) / 1e12  # TFLOP/s
                row["graph_tflops"] = round(rate, 1)
                row["mfu_graph"] = round(rate / ceiling, 3)  # of the measured matmul rate
                print(json.dumps(row), flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
        del nets
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
