"""One network step of m4v-768p and attn-768p at the 121-frame last-unit stage-2 shape (GPU check).

python bench/step_check.py --out results.json

Batch 2 (CFG), bf16, random weights (a step's time does not depend on weight values). Uncached = the full
sequence (text + compressed history + current frame); cached = prepare_context once, then the current
frame only. Times: medians of CUDA-event timings after warm-up; peak memory: max_memory_allocated per case.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_common import Clock, build_network, shape_inputs, with_single  # noqa: E402
from model.config import ModelConfig, get_preset  # noqa: E402
from model.ssm_kernels import resolve_backend  # noqa: E402
from model.text_encoder import TextEmbeddings  # noqa: E402

log = logging.getLogger("step_check")


def last_unit_inputs(cfg, frames: int, device: torch.device, dtype: torch.dtype, batch: int = 2):  # type: ignore[no-untyped-def]
    """Stage 2 (full res) of the last unit: history k-1 full, k-2 half, older at quarter resolution."""
    res = cfg.default_resolution
    x, history = shape_inputs(
        cfg, res, cfg.latent_frames(frames) - 1, cfg.sampler.num_stages - 1, device, dtype
    )
    g = torch.Generator(device="cpu").manual_seed(0)
    lt = cfg.text.max_tokens
    mask = torch.ones(batch, lt, dtype=torch.bool)
    mask[:, 40:] = False  # a typical prompt pads most of T5's 128 tokens
    text = TextEmbeddings(
        tokens=torch.randn(batch, lt, cfg.text.token_dim, generator=g).to(device, dtype),
        mask=mask.to(device),
        pooled=torch.randn(batch, cfg.text.pooled_dim, generator=g).to(device, dtype),
    )
    t = torch.full((batch,), 250.0, device=device)
    return x, t, text, history, cfg.latent_grid(*res)


def check(
    cfg: ModelConfig, device: torch.device, dtype: torch.dtype, backend: str
) -> dict[str, float | str | int]:
    net = build_network(cfg, device, dtype, backend)
    cuda_median = Clock(device, warmup=3, reps=10).median
    x, t, text, history, full_hw = last_unit_inputs(cfg, 121, device, dtype)
    out: dict[str, float | str | int] = {
        "preset": cfg.name,
        "scan_backend": backend,
        "video_tokens": sum(hh.shape[-1] * hh.shape[-2] // 4 for hh in history)
        + x.shape[-1] * x.shape[-2] // 4,
    }
    with torch.inference_mode():
        torch.cuda.reset_peak_memory_stats()
        out["uncached_step_ms"] = 1e3 * cuda_median(
            lambda: net(x, t, text=text, history=history, full_hw=full_hw)
        )
        out["uncached_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        torch.cuda.reset_peak_memory_stats()
        out["context_ms"] = 1e3 * cuda_median(
            lambda: net.prepare_context(text=text, history=history, full_hw=full_hw)
        )
        cache = net.prepare_context(text=text, history=history, full_hw=full_hw)
        out["cached_step_ms"] = 1e3 * cuda_median(lambda: net(x, t, cache=cache))
        out["cached_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        ref = net(x, t, text=text, history=history, full_hw=full_hw).float()
        got = net(x, t, cache=cache).float()
        out["cached_vs_uncached_rel_err"] = float((got - ref).norm() / ref.norm())
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("step_check.json"))
    args = ap.parse_args()
    device, dtype = torch.device("cuda"), torch.bfloat16
    backend = resolve_backend("auto", device)
    rows = []
    # The attention baseline in M4V's cached "causal" context mode (the served attn-768p runs PyramidFlow's
    # uncached "pyramidflow" mode, which has no context cache to time).
    m4v = get_preset("m4v-768p")
    for cfg in (m4v, with_single(m4v, "attention")):
        rows.append(check(cfg, device, dtype, backend))
        torch.cuda.empty_cache()
    meta = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(meta, indent=2))
    log.info("| preset | video tokens | uncached ms | peak GB | context ms | cached ms | peak GB | rel err |")
    for r in rows:
        log.info(
            "| %s | %s | %.2f | %.1f | %.2f | %.2f | %.1f | %.1e |",
            r["preset"],
            r["video_tokens"],
            r["uncached_step_ms"],
            r["uncached_peak_gb"],
            r["context_ms"],
            r["cached_step_ms"],
            r["cached_peak_gb"],
            r["cached_vs_uncached_rel_err"],
        )


if __name__ == "__main__":
    main()
