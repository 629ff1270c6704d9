"""gpu_bench --variants: time the per-step shapes under each RuntimeOptions combination in one run.

Shapes (batch 2, the 121-frame video's last unit, where steps cost most): the cached step at every stage, the
context pass at stage 2, and the uncached step at stage 2 (the dense-mask case); plus the streaming VAE decode
of one later latent frame per tile batch, and one real overlapped-vs-inline VideoPipeline run when --e2e asks.
Each variant builds its own network (same random weights: seed 0) so compiled code and graphs never leak
between variants. Errors are recorded per variant instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch

from bench.bench_common import build_network, shape_inputs, stand_in_text
from model.config import ModelConfig
from model.network import M4VNetwork
from model.runtime import RuntimeOptions
from model.vae import CausalVAE
from model.vae_stream import stream_decoder

log = logging.getLogger("gpu_bench.variants")

NETWORK_VARIANTS: dict[str, RuntimeOptions] = {
    "baseline": RuntimeOptions(),
    "flex": RuntimeOptions(attention_backend="flex"),
    "sdpa_split": RuntimeOptions(attention_backend="sdpa_split"),
    "sdpa_split+graphs": RuntimeOptions(attention_backend="sdpa_split", cuda_graphs=True),
    "sdpa_split+compile": RuntimeOptions(attention_backend="sdpa_split", compile=True),
    "sdpa_split+compile+graphs": RuntimeOptions(
        attention_backend="sdpa_split", compile=True, cuda_graphs=True
    ),
    "flex+compile+graphs": RuntimeOptions(attention_backend="flex", compile=True, cuda_graphs=True),
}
TILE_BATCHES = (1, 2, 4, 8)


def pick(names: str) -> dict[str, RuntimeOptions]:
    if names == "all":
        return NETWORK_VARIANTS
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in NETWORK_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(NETWORK_VARIANTS)} or 'all'")
    return {n: NETWORK_VARIANTS[n] for n in ["baseline", *chosen] if n in NETWORK_VARIANTS}


def _net(
    cfg: ModelConfig, opts: RuntimeOptions, device: torch.device, dtype: torch.dtype, backend: str
) -> M4VNetwork:
    torch.manual_seed(0)
    return build_network(cfg, device, dtype, backend, runtime=opts)


def _stage(
    net: M4VNetwork, cfg: ModelConfig, setup: Any, unit: int, stage: int, uncached: bool
) -> dict[str, float]:

    text = stand_in_text(cfg, setup.device, setup.dtype)
    text.mask[1, 8:] = False  # the uncond row (negative prompt) is short: exercises key padding
    t = torch.full((2,), 500.0, device=setup.device)
    full_hw = cfg.latent_grid(*setup.res)
    x, hist = shape_inputs(cfg, setup.res, unit, stage, setup.device, setup.dtype)
    cache = net.prepare_context(text=text, history=hist, full_hw=full_hw)
    out = {f"step_ms_stage{stage}": 1e3 * setup.clock.median(lambda: net(x, t, cache=cache))}
    if stage < cfg.sampler.num_stages - 1:
        return out
    ref = _net(cfg, RuntimeOptions(), setup.device, setup.dtype, setup.backend)
    want = ref(x, t, cache=ref.prepare_context(text=text, history=hist, full_hw=full_hw)).float()
    got = net(x, t, cache=cache).float()
    out["rel_err_vs_baseline"] = float((got - want).norm() / want.norm())
    del ref
    out["context_ms"] = 1e3 * setup.clock.median(
        lambda: net.prepare_context(text=text, history=hist, full_hw=full_hw)
    )
    if uncached:
        out["uncached_step_ms"] = 1e3 * setup.clock.median(
            lambda: net(x, t, text=text, history=hist, full_hw=full_hw)
        )
    return out


def time_variant(
    cfg: ModelConfig, opts: RuntimeOptions, setup: Any, unit: int, uncached: bool
) -> dict[str, Any]:
    """Cached step per stage, context at the top stage, uncached top-stage step; medians in ms."""
    net = _net(cfg, opts, setup.device, setup.dtype, setup.backend)
    out: dict[str, Any] = {}
    began = time.perf_counter()
    with torch.inference_mode():
        for stage in range(cfg.sampler.num_stages):
            out.update(_stage(net, cfg, setup, unit, stage, uncached))
    out["wall_s_incl_compile"] = time.perf_counter() - began
    if setup.device.type == "cuda":
        out["peak_gb"] = torch.cuda.max_memory_allocated(setup.device) / 2**30
    return out


def time_vae(cfg: ModelConfig, setup: Any) -> dict[str, float]:
    vae = CausalVAE(cfg.vae, device=setup.device, dtype=setup.dtype).eval()
    h, w = cfg.latent_grid(*setup.res)
    z = torch.randn(1, cfg.vae.latent_channels, 1, h, w, device=setup.device, dtype=setup.dtype)
    out: dict[str, float] = {}
    with torch.inference_mode():
        for tb in TILE_BATCHES:
            if setup.device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(setup.device)
            dec = stream_decoder(vae, tb)
            dec.decode_next(z)
            out[f"decode_later_ms_tiles{tb}"] = 1e3 * setup.clock.median(lambda d=dec: d.decode_next(z))
            if setup.device.type == "cuda":
                out[f"decode_peak_gb_tiles{tb}"] = torch.cuda.max_memory_allocated(setup.device) / 2**30
            del dec
    return out


def run_variants(cfg_m: ModelConfig, cfg_a: ModelConfig, setup: Any, names: str, unit: int) -> dict[str, Any]:
    results: dict[str, Any] = {"unit": unit, "network": {}}
    for model_cfg in (cfg_m, cfg_a):
        for name, opts in pick(names).items():
            key = f"{model_cfg.name}/{name}"
            if setup.device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(setup.device)
            try:
                row = time_variant(model_cfg, opts, setup, unit, uncached=not opts.cuda_graphs)
            except Exception as exc:  # noqa: BLE001 - a failing variant is a result, the others still run
                log.exception("variant %s failed", key)
                row = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            row["options"] = dataclasses.asdict(opts)
            results["network"][key] = row
            log.info(
                "variant %-40s %s", key, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}
            )
    try:
        results["vae"] = time_vae(cfg_m, setup)
    except Exception as exc:  # noqa: BLE001
        log.exception("VAE variants failed")
        results["vae"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| variant | stage0 ms | stage1 ms | stage2 ms | context ms | uncached ms | rel err | peak GB |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, r in results["network"].items():
        cells = [r.get(k) for k in ("step_ms_stage0", "step_ms_stage1", "step_ms_stage2", "context_ms",
                                    "uncached_step_ms", "rel_err_vs_baseline", "peak_gb")]  # fmt: skip
        text = [f"{c:.3g}" if isinstance(c, float) else "-" for c in cells]
        lines.append(f"| {key} | " + " | ".join(text) + (f" | {r['error'][:60]}" if "error" in r else " |"))
    lines += ["", "| VAE | value |", "|---|---|"]
    lines += [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results["vae"].items()
    ]
    return "\n".join(lines)
