"""What the GPU benchmarks share: CUDA-event medians, networks with random weights, inputs of the real sizes.

Used by bench/gpu_bench.py, bench/variants.py and bench/step_check.py. Weights and inputs are random: a
forward's time does not depend on their values (same shapes, same kernels).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from model.config import ModelConfig
from model.network import M4VNetwork
from model.runtime import RuntimeOptions
from model.text_encoder import TextEmbeddings


class Clock:
    def __init__(self, device: torch.device, warmup: int, reps: int) -> None:
        self.device, self.warmup, self.reps = device, warmup, reps

    def median(self, fn: Callable[[], object]) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.reps):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end) / 1e3)
            else:
                began = time.perf_counter()
                fn()
                times.append(time.perf_counter() - began)
        return statistics.median(times)


def with_single(cfg: ModelConfig, kind: str) -> ModelConfig:
    net = dataclasses.replace(cfg.network, single_block=kind)  # type: ignore[arg-type]
    return dataclasses.replace(cfg, name=f"{cfg.name}-{kind}", network=net)


def build_network(
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    backend: str,
    runtime: RuntimeOptions | None = None,
) -> M4VNetwork:
    return M4VNetwork.for_preset(
        cfg, scan_backend=backend, device=device, dtype=dtype, runtime=runtime
    ).eval()


def stand_in_text(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> TextEmbeddings:
    """[cond; uncond] text of the real sizes (T5-XXL tokens + pooled CLIP at 768p), random values."""
    lt = cfg.text.max_tokens
    return TextEmbeddings(
        torch.randn(2, lt, cfg.text.token_dim, device=device, dtype=dtype),
        torch.ones(2, lt, dtype=torch.bool, device=device),
        torch.randn(2, cfg.text.pooled_dim, device=device, dtype=dtype),
    )


def shape_inputs(
    cfg: ModelConfig, res: tuple[int, int], unit: int, stage: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Current noisy frame and compressed-pyramid history at (unit, stage), batch 2 (CFG)."""
    h, w = cfg.latent_grid(*res)
    top, c = cfg.sampler.num_stages - 1, cfg.vae.latent_channels

    def frame(level: int) -> torch.Tensor:
        f = 2 ** (top - level)
        return torch.randn(2, c, h // f, w // f, device=device, dtype=dtype)

    return frame(stage), [frame(max(0, stage - (unit - 1 - j))) for j in range(unit)]
