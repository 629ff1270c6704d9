"""Where a pipeline's weights come from: one of our checkpoints (its config checked against the served
preset), an unconverted PyramidFlow-miniFLUX folder (converted in memory), or nothing (refused unless
allowed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.config import ModelConfig
from model.loading import load_config, load_weights

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random"
# Text of the start-up refusal; README "Real weights" says the same at more length.
HOW_TO_GET_WEIGHTS = (
    "download PyramidFlow-miniFLUX on a machine that reaches the Hugging Face hub "
    "(huggingface-cli download rain1011/pyramid-flow-miniflux --local-dir /models/pyramid-flow-miniflux) "
    "and set M4V_WEIGHTS=/models/pyramid-flow-miniflux (attn-768p serves it as is; "
    "`m4v convert pyramid-flow` writes our checkpoint layout); see README 'Real weights'. "
    "Benchmarks may set M4V_ALLOW_RANDOM_WEIGHTS=true to serve random weights"
)
_UNCHECKED_TEXT_FIELDS = {"t5_path", "clip_path"}  # where the encoders live is deployment, not model


class RandomWeightsRefusedError(RuntimeError):
    """A non-tiny preset was asked to start without weights."""


def refuse_random_weights(preset: str, allowed: bool) -> None:
    """Raise unless random weights are acceptable; log the ERROR banner when they are served."""
    if preset != "tiny" and not allowed:
        raise RandomWeightsRefusedError(
            f"preset {preset!r} has no weights (M4V_WEIGHTS unset): {HOW_TO_GET_WEIGHTS}"
        )
    log.error(
        "RANDOM weights: preset %r serves a randomly initialised network and VAE; its videos are noise "
        "(M4V_ALLOW_RANDOM_WEIGHTS is for benchmarks only)",
        preset,
    )


def _diff(stored: Any, served: Any, where: str) -> list[tuple[str, Any, Any]]:
    if isinstance(stored, dict) and isinstance(served, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(stored) | set(served)):
            out += _diff(stored.get(key), served.get(key), f"{where}.{key}" if where else key)
        return out
    norm = lambda v: list(v) if isinstance(v, tuple | list) else v  # noqa: E731
    return [] if norm(stored) == norm(served) else [(where, stored, served)]


def check_config(stored: ModelConfig, served: ModelConfig, where: str) -> None:
    """The checkpoint's network, VAE and text-encoder config must equal the served preset's (the sampler,
    sizes and frame limits are the preset's to choose). A mismatch names the field and both values."""
    a, b = stored.to_dict(), served.to_dict()
    for d in (a, b):
        for key in _UNCHECKED_TEXT_FIELDS:
            d["text"].pop(key, None)
    diffs = [d for part in ("network", "vae", "text") for d in _diff(a[part], b[part], part)]
    if diffs:
        shown = "; ".join(f"{f}: checkpoint {x!r}, preset {y!r}" for f, x, y in diffs[:5])
        more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise ValueError(
            f"{where}: checkpoint config does not match preset {served.name!r}: {shown}{more}; "
            f"serve the preset it was made for (M4V_PRESET={stored.name}) or convert again"
        )


def load_model_weights(
    path: str,
    cfg: ModelConfig,
    network: nn.Module,
    vae: nn.Module,
    *,
    device: torch.device | str,
    dtype: torch.dtype | None,
    allow_random: bool = False,
) -> list[str]:
    """Fill network and VAE from `path`: our checkpoint (config checked first) or a PyramidFlow folder.
    Returns the modules left randomly initialised (a conversion that is not complete; needs allow_random)."""
    from model.pyramid_flow.layout import is_pyramidflow_folder

    modules = {"network": network, "vae": vae}
    if is_pyramidflow_folder(Path(path)):
        from model.pyramid_flow.convert import convert_in_memory, random_parts

        log.info("M4V_WEIGHTS %s is an unconverted PyramidFlow folder: converting in memory", path)
        report = convert_in_memory(
            Path(path), cfg, modules, device=device, dtype=dtype, allow_random=allow_random
        )
        return random_parts(report)
    check_config(load_config(path), cfg, path)
    random = converted_random_parts(Path(path))
    if random and not allow_random:
        raise RandomWeightsRefusedError(
            f"{path}: its conversion report lists {random} as randomly initialised; "
            "set M4V_ALLOW_RANDOM_WEIGHTS=true to serve it anyway (benchmarks only)"
        )
    if random:
        log.error("RANDOM weights: %s has randomly initialised %s (its conversion report)", path, random)
    load_weights(path, modules, device=device, dtype=dtype)
    return random


def converted_random_parts(path: Path) -> list[str]:
    """Modules a conversion left random, from the report `m4v convert` saved beside the checkpoint."""
    from model.pyramid_flow.report import REPORT_NAME, random_parts_of

    report = path / REPORT_NAME if path.is_dir() else path.parent / REPORT_NAME
    if not report.exists():
        return []
    return random_parts_of(json.loads(report.read_text()).get("newly_initialised", {}))
