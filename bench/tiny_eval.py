"""Prompt adherence of the tiny preset on held-out combinations and unseen paraphrases (issue 5).

python bench/tiny_eval.py [--weights PATH] [--prompts 240] [--batch 60] [--device cuda] [--text-cache PATH]
    [--time-cpu] [--out bench/results/tiny_eval.json]

Prompts come from model.train.captions.eval_prompts (colour x shape x motion triples never trained on, written
with sentence templates never trained on). Clips are sampled in batches with the preset's default steps and
guidance (seed = prompt index); the analytic detector (model/detector.py) scores each clip. The same
specs rendered by the world and passed through the VAE alone give the ceiling (vae_roundtrip_accuracy), with
per-shape fill ratios and what each shape was read as (vae_roundtrip_shapes; the detector's thresholds are
0.64 triangle/circle and 0.89 circle/square, so a VAE that rounds triangles shows their fill above 0.64).
--time-cpu also times one clip through VideoPipeline on this machine's CPU (the model card's number).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from model.detector import Detection, detect, fill_ratio
from model.pipeline import VideoPipeline, to_uint8_frames
from model.pipeline_types import GenerationRequest
from model.sampler import sample_video
from model.text_encoder import TextEmbeddings, TextEncoder
from model.train.captions import eval_prompts
from model.train.common import clip_batch
from model.train.world import ClipSpec

log = logging.getLogger("tiny_eval")


Steps = tuple[tuple[int, ...], tuple[int, ...]]  # (first frame per stage, later frames per stage)


def generate_batch(
    pipe: VideoPipeline,
    encoder: TextEncoder,
    prompts: list[str],
    seed: int,
    guidance: tuple[float, float],
    steps: Steps | None = None,
) -> list:
    """Frames (n, H, W, 3) uint8 for each prompt, sampled together as one batch (steps: the preset's)."""
    cfg = pipe.cfg
    first, later = steps or (cfg.sampler.first_frame_steps, cfg.sampler.later_frame_steps)
    text = TextEmbeddings.cat(
        [encoder.encode(prompts), encoder.encode([cfg.sampler.negative_prompt] * len(prompts))]
    )
    w, h = cfg.default_resolution
    with torch.inference_mode():
        latents = sample_video(
            pipe.network,
            text,
            cfg,
            num_latent_frames=cfg.latent_frames(cfg.default_frames),
            full_hw=cfg.latent_grid(w, h),
            steps_first=first,
            steps_later=later,
            guidance_first=guidance[0],
            guidance_later=guidance[1],
            generator=torch.Generator("cpu").manual_seed(seed),
            device=pipe.device,
            dtype=pipe.dtype,
        )
        video = pipe.vae.decode(latents.to(pipe.dtype))  # (B, 3, F, H, W)
    return [to_uint8_frames(video[i : i + 1]) for i in range(video.shape[0])]


class Tally:
    """Hits per attribute ("all": the three together) over scored clips."""

    def __init__(self) -> None:
        self.hits = {"color": 0, "shape": 0, "motion": 0, "all": 0}
        self.n = 0

    def add(self, spec: ClipSpec, det: Detection) -> None:
        m = det.matches(spec.color, spec.shape, spec.motion)
        m["all"] = all(m.values())
        for k in self.hits:
            self.hits[k] += m[k]
        self.n += 1

    def accuracy(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.hits.items()}


class ShapeTally:
    """Per true shape: fill ratios (fill_ratio: what the detector reads shape from) and the reading."""

    def __init__(self) -> None:
        self.fills: dict[str, list[float]] = {}
        self.read_as: dict[str, dict[str, int]] = {}

    def add(self, spec: ClipSpec, frames, det: Detection) -> None:  # frames (n, H, W, 3) uint8
        fill = fill_ratio(frames)
        if fill is not None:
            self.fills.setdefault(spec.shape, []).append(fill)
        read = self.read_as.setdefault(spec.shape, {})
        read[det.shape or "none"] = read.get(det.shape or "none", 0) + 1

    def summary(self) -> dict[str, dict]:
        out = {}
        for shape in sorted(self.read_as):
            f = sorted(self.fills.get(shape, []))
            qs = {"min": 0.0, "p10": 0.1, "median": 0.5, "p90": 0.9, "max": 1.0}
            out[shape] = {
                "clips": sum(self.read_as[shape].values()),
                "fill": {
                    k: round(f[min(len(f) - 1, int(q * len(f)))], 3) if f else None for k, q in qs.items()
                },
                "read_as": dict(sorted(self.read_as[shape].items())),
            }
        return out


def evaluate(
    pipe: VideoPipeline,
    encoder: TextEncoder,
    count: int,
    batch: int,
    guidance: tuple[float, float] = (7.0, 5.0),
    steps: Steps | None = None,
) -> dict:
    items = eval_prompts(count)
    tally, shapes, rows = Tally(), ShapeTally(), []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        clips = generate_batch(pipe, encoder, [p for _, p in chunk], start, guidance, steps)
        for (spec, prompt), frames in zip(chunk, clips, strict=True):
            det = detect(frames)
            tally.add(spec, det)
            shapes.add(spec, frames, det)
            rows.append(
                {
                    "prompt": prompt,
                    "want": [spec.color, spec.shape, spec.motion],
                    "got": [det.color, det.shape, det.motion],
                }
            )
    return {"prompts": len(items), "accuracy": tally.accuracy(), "shapes": shapes.summary(), "clips": rows}


def vae_roundtrip(pipe: VideoPipeline, count: int, batch: int, seed: int = 0) -> tuple[Tally, ShapeTally]:
    """The held-out specs rendered by the world and passed through the VAE (encode + decode), scored: the
    most the network can reach, since everything it draws goes through that decoder."""
    items = eval_prompts(count)
    g, tally, shapes = torch.Generator().manual_seed(seed), Tally(), ShapeTally()
    for start in range(0, len(items), batch):
        specs = [spec for spec, _ in items[start : start + batch]]
        video = clip_batch(specs, pipe.cfg, g, pipe.device).to(pipe.dtype)  # (b, 3, F, H, W)
        with torch.inference_mode():
            rec = pipe.vae.decode(pipe.vae.encode(video))
        for i, spec in enumerate(specs):
            frames = to_uint8_frames(rec[i : i + 1])
            det = detect(frames)
            tally.add(spec, det)
            shapes.add(spec, frames, det)
    return tally, shapes


def vae_ceiling(pipe: VideoPipeline, count: int, batch: int, seed: int = 0) -> dict[str, float]:
    """Accuracy per attribute of vae_roundtrip."""
    return vae_roundtrip(pipe, count, batch, seed)[0].accuracy()


def time_cpu(weights: str | None) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    pipe = VideoPipeline.from_preset("tiny", weights=weights, device="cpu")
    cfg = pipe.cfg
    w, h = cfg.default_resolution
    req = GenerationRequest(
        prompt="a red circle moving right on a black background",
        width=w,
        height=h,
        num_frames=cfg.default_frames,
        seed=0,
    )
    pipe.generate(req)  # warm-up
    began = time.perf_counter()
    res = pipe.generate(req)
    return {
        "cpu_seconds": time.perf_counter() - began,
        "threads": torch.get_num_threads(),
        "timings": res.timings.__dict__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None)
    p.add_argument("--prompts", type=int, default=240)
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--text-cache", type=Path, default=None, help="MiniLM cache (boxes without the package)")
    p.add_argument("--guidance", type=float, nargs=2, default=(7.0, 5.0), help="first frame, later frames")
    p.add_argument("--time-cpu", action="store_true")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument(
        "--ceiling-only",
        action="store_true",
        help="only the VAE round trip (vae_roundtrip_accuracy, vae_roundtrip_shapes)",
    )
    p.add_argument("--out", type=Path, default=Path("bench/results/tiny_eval.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report: dict = {"machine": platform.processor() or platform.machine(), "device": args.device}
    if args.device.startswith("cuda"):
        report["card"] = torch.cuda.get_device_name()
    if not args.skip_eval:
        pipe = VideoPipeline.from_preset(
            "tiny",
            weights=args.weights,
            device=args.device,
            stand_in_text=args.text_cache is not None or args.ceiling_only,
        )
        if args.text_cache is not None:
            from model.train.text_cache import TextCache

            encoder: TextEncoder = TextCache(args.text_cache, args.device)
        else:
            encoder = pipe.text_encoder
        began = time.perf_counter()
        tally, shapes = vae_roundtrip(pipe, args.prompts, args.batch)
        report["vae_roundtrip_accuracy"] = tally.accuracy()
        report["vae_roundtrip_shapes"] = shapes.summary()
        log.info("VAE round trip of the rendered held-out clips: %s", report["vae_roundtrip_accuracy"])
        log.info("VAE round trip per shape: %s", json.dumps(report["vae_roundtrip_shapes"]))
        if not args.ceiling_only:
            report.update(evaluate(pipe, encoder, args.prompts, args.batch, tuple(args.guidance)))
            report["guidance"] = list(args.guidance)
            log.info("accuracy %s", json.dumps(report["accuracy"]))
        report["eval_seconds"] = time.perf_counter() - began
    if args.time_cpu:
        report.update(time_cpu(args.weights))
        log.info("one clip on CPU: %.1f s", report["cpu_seconds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
