"""PyramidFlow-miniFLUX folder -> tensors for our network and VAE, with a strict report.

`m4v convert pyramid-flow` writes them as one of our checkpoints (model/loading.py layout) with the report
beside it; a pipeline whose M4V_WEIGHTS is an unconverted folder calls convert_in_memory().
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from model.config import ModelConfig
from model.loading import _target_dtype, save_checkpoint
from model.pyramid_flow.dit_mapping import MMDIM_NEW, SINGLE_DROPPED, check_dit_config, dit_rules
from model.pyramid_flow.layout import DIT_DIR, VAE_DIR, read_config, read_tensors
from model.pyramid_flow.report import ConversionReport, random_parts_of
from model.pyramid_flow.vae_mapping import ENCODER_DROPPED, check_vae_config, is_encoder_side, vae_source_key
from model.text_encoder import DIFFUSERS_DIRS

log = logging.getLogger(__name__)

VAE_NOT_CONVERTED = (
    "the preset's VAE is model/vae.py's (kind 'm4v'), not PyramidFlow's causal video VAE (kind 'pyramidflow')"
)
VAE_MISSING = "no causal_video_vae/ folder"
VAE_NEW = "no PyramidFlow VAE tensors for this preset's VAE: RANDOM"


class IncompleteConversionError(RuntimeError):
    """The converted model would serve randomly initialised parts (a VAE the folder does not supply)."""


def convert_tensors(
    src: Path, cfg: ModelConfig, targets: dict[str, torch.Size]
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Tensors for the target keys ("network.*", "vae.*" -> shape) made from the folder at src."""
    dit_dir = src / DIT_DIR
    check_dit_config(read_config(dit_dir), cfg, str(dit_dir / "config.json"))
    dit = read_tensors(dit_dir)
    report = ConversionReport(source=str(src), preset=cfg.name)
    sources = {f"{DIT_DIR}/{k}" for k in dit}
    out: dict[str, Tensor] = {}
    for rule in dit_rules(cfg):
        key = f"network.{rule.target}"
        missing = [s for s in rule.sources if s not in dit]
        if missing:
            raise ValueError(f"{dit_dir}: {key} needs {missing}, not in the checkpoint")
        t = rule.fn([dit[s] for s in rule.sources])
        if key not in targets:
            raise ValueError(f"{key}: not a parameter of preset {cfg.name!r}")
        if t.shape != targets[key]:
            raise ValueError(
                f"{key}: made from {list(rule.sources)} with shape {tuple(t.shape)}, "
                f"preset {cfg.name!r} wants {tuple(targets[key])}"
            )
        out[key] = t.contiguous()
        report.fill(key, [f"{DIT_DIR}/{s}" for s in rule.sources])
    if cfg.network.single_block == "mmdim":
        report.dropped.update(
            {k: SINGLE_DROPPED for k in sources if k.startswith(f"{DIT_DIR}/single_transformer_blocks.")}
        )
        report.new_init.update({k: MMDIM_NEW for k in targets if k.startswith("network.single_blocks.")})
    vae_dir = src / VAE_DIR
    vae = read_tensors(vae_dir) if vae_dir.is_dir() else {}
    sources |= {f"{VAE_DIR}/{k}" for k in vae}
    vae_targets = [k for k in targets if k.startswith("vae.")]
    if cfg.vae.kind == "pyramidflow" and vae_dir.is_dir():
        check_vae_config(read_config(vae_dir), cfg.vae, cfg.name, str(vae_dir / "config.json"))
        for key in vae_targets:
            source = vae_source_key(key[len("vae.") :], vae)
            if source not in vae:
                raise ValueError(f"{vae_dir}: {key} needs {source!r}, not in the checkpoint")
            if vae[source].shape != targets[key]:
                raise ValueError(
                    f"{key}: {VAE_DIR}/{source} has shape {tuple(vae[source].shape)}, "
                    f"preset {cfg.name!r} wants {tuple(targets[key])}"
                )
            out[key] = vae[source].contiguous()
            report.fill(key, [f"{VAE_DIR}/{source}"])
        report.dropped.update({f"{VAE_DIR}/{k}": ENCODER_DROPPED for k in vae if is_encoder_side(k)})
    else:
        why = VAE_MISSING if cfg.vae.kind == "pyramidflow" else VAE_NOT_CONVERTED
        report.dropped.update({f"{VAE_DIR}/{k}": why for k in vae})
        report.new_init.update(dict.fromkeys(vae_targets, VAE_NEW))
    report.check(sources, set(targets))
    return out, report


def random_parts(report: ConversionReport) -> list[str]:
    """Modules the conversion leaves randomly initialised apart from the expected MM-DiM blocks."""
    return random_parts_of(report.new_init)


def _targets(modules: dict[str, nn.Module]) -> dict[str, torch.Size]:
    return {f"{n}.{k}": t.shape for n, m in modules.items() for k, t in m.state_dict(keep_vars=True).items()}


def convert_in_memory(
    src: Path,
    cfg: ModelConfig,
    modules: dict[str, nn.Module],
    *,
    device: torch.device | str,
    dtype: torch.dtype | None,
    allow_random: bool = False,
) -> ConversionReport:
    """Fill `modules` ("network", "vae") from an unconverted folder; newly initialised parameters keep the
    modules' own initialisation. A random VAE is refused unless allow_random (M4V_ALLOW_RANDOM_WEIGHTS)."""
    tensors, report = convert_tensors(src, cfg, _targets(modules))
    log.info("%s", report.summary())
    bad = random_parts(report)
    if bad and not allow_random:
        raise IncompleteConversionError(
            f"{src}: converting leaves {bad} randomly initialised (see the report); "
            "set M4V_ALLOW_RANDOM_WEIGHTS=true to serve it anyway (benchmarks only)"
        )
    if bad:
        log.error("RANDOM weights: %s converted from %s with randomly initialised %s", cfg.name, src, bad)
    for name, module in modules.items():
        current = module.state_dict(keep_vars=True)
        state = {}
        for key, t in current.items():
            new = tensors.get(f"{name}.{key}")
            value = t.detach() if new is None else new
            state[key] = value.to(device=device, dtype=_target_dtype(value.dtype, t.dtype, dtype, False))
        module.load_state_dict(state, strict=True, assign=True)
    return report


def convert_pyramid_flow(
    src: Path, dst: Path, cfg: ModelConfig, *, allow_random: bool = False, link_text: bool = True
) -> ConversionReport:
    """Write our checkpoint for preset cfg to dst (a directory) from the PyramidFlow folder src, the report
    beside it, and links to src's text encoder folders (so dst alone is a complete M4V_WEIGHTS)."""
    from model.network import M4VNetwork
    from model.vae import CausalVAE

    modules: dict[str, nn.Module] = {
        "network": M4VNetwork.for_preset(cfg, device="cpu"),
        "vae": CausalVAE(cfg.vae, device="cpu"),
    }
    report = convert_in_memory(src, cfg, modules, device="cpu", dtype=None, allow_random=allow_random)
    dst.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, cfg, modules)
    report.save(dst)
    if link_text:
        for model_sub, tok_sub in DIFFUSERS_DIRS.values():
            for sub in (model_sub, tok_sub):
                if (src / sub).is_dir() and not (dst / sub).exists():
                    os.symlink((src / sub).resolve(), dst / sub, target_is_directory=True)
    return report
