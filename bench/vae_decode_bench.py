"""Streaming VAE decode of one preset's latent frames: time per later latent frame, peak memory, and the
difference from the reference decoder (the VAE's own tiles, one at a time), for one set of decode options.
One variant per process (bench/gpu_round.sh vae), one JSON line each:

    python bench/vae_decode_bench.py --preset m4v-768p --tile-px 1280 --out vae.jsonl

Random weights and latents (the time does not depend on the values; the difference is then a check that the
variant decodes the same function, as in bench/e2e_run.py --check). The difference is in 8-bit levels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import get_preset  # noqa: E402
from model.vae import CausalVAE  # noqa: E402
from model.vae_stream import stream_decoder  # noqa: E402


def decode_all(dec: object, latents: list[torch.Tensor], device: torch.device) -> tuple[list[float], list]:
    """Decode every latent frame in order; seconds of each decode, frames on the CPU."""
    seconds, frames = [], []
    for z in latents:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        out = dec.decode_next(z)  # type: ignore[attr-defined]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - began)
        frames.append(out.float().cpu())
    return seconds, frames


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="m4v-768p")
    p.add_argument("--device", default="cuda")
    p.add_argument("--latent-frames", type=int, default=5, help="the first (image) frame plus later ones")
    p.add_argument("--tile-px", type=int, default=None)
    p.add_argument("--tile-batch", type=int, default=1)
    p.add_argument("--frame-chunk", type=int, default=None, help="frames per block call (default: all)")
    p.add_argument("--vae-cl", action="store_true", help="VAE in channels_last_3d")
    p.add_argument("--cudnn-bench", action="store_true")
    p.add_argument("--no-check", action="store_true", help="skip the reference decode")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = get_preset(args.preset)
    torch.manual_seed(0)
    vae = CausalVAE(cfg.vae, device=device, dtype=dtype).eval()
    h, w = cfg.latent_grid(*cfg.default_resolution)
    g = torch.Generator(device).manual_seed(1)
    latents = [
        torch.randn(1, cfg.vae.latent_channels, 1, h, w, device=device, dtype=dtype, generator=g)
        for _ in range(args.latent_frames)
    ]
    row: dict[str, object] = {
        "preset": args.preset,
        "tile_px": args.tile_px or cfg.vae.tile_px,
        "tile_batch": args.tile_batch,
        "frame_chunk": args.frame_chunk,
        "vae_cl": args.vae_cl,
        "cudnn_bench": args.cudnn_bench,
        "latent_hw": [h, w],
    }
    with torch.inference_mode():
        ref = None
        if not args.no_check:
            _, ref = decode_all(stream_decoder(vae), latents, device)
        if args.vae_cl:
            vae = vae.to(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = args.cudnn_bench
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        dec = stream_decoder(vae, args.tile_batch, args.tile_px, args.frame_chunk)
        seconds, got = decode_all(dec, latents, device)
    later = seconds[2:] if len(seconds) > 3 else seconds[1:]  # the first later frame pays cuDNN's timing
    row["first_frame_s"] = round(seconds[0], 4)
    row["later_frame_s"] = round(statistics.median(later), 4)
    if device.type == "cuda":
        row["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        row["device"] = torch.cuda.get_device_name(device)
    if ref is not None:
        diff = torch.cat([(a - b).abs().flatten() for a, b in zip(ref, got, strict=True)])
        row["max_abs_diff_levels"] = round(float(diff.max()) * 127.5, 3)
        row["mean_abs_diff_levels"] = round(float(diff.mean()) * 127.5, 4)
    row["torch"] = torch.__version__
    line = json.dumps(row)
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")
    return row


if __name__ == "__main__":
    main()
