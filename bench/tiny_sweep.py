"""Guidance and step sweep of the tiny preset on held-out prompts (issue "The bundled tiny model", item 3).

    python bench/tiny_sweep.py [--weights PATH] [--text-cache .train/text_cache.safetensors] [--prompts 120]
        [--guidance 1,1 3,2 5,3 7,5 9,6] [--steps 4,3 8,6 12,8] --out sweep.jsonl

Each point samples the same held-out prompts (bench/tiny_eval.py, seed = prompt index) with guidance
"first,later" and steps "first,later" per stage; one JSON line per point, best (all three, then colour)
printed last. Worth running once the model draws one shape; the winner becomes the preset's defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tiny_eval import evaluate  # noqa: E402
from model.pipeline import VideoPipeline  # noqa: E402
from model.text_encoder import TextEncoder  # noqa: E402


def pair(text: str, kind: type) -> tuple:
    a, b = text.split(",")
    return kind(a), kind(b)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--text-cache", type=Path, default=None)
    p.add_argument("--prompts", type=int, default=120)
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--guidance", nargs="+", default=["1,1", "3,2", "5,3", "7,5", "9,6"])
    p.add_argument("--steps", nargs="+", default=["4,3", "8,6", "12,8"], help="per stage: first,later")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    pipe = VideoPipeline.from_preset(
        "tiny", weights=args.weights, device=args.device, stand_in_text=args.text_cache is not None
    )
    encoder: TextEncoder = pipe.text_encoder
    if args.text_cache is not None:
        from model.train.text_cache import TextCache

        encoder = TextCache(args.text_cache, args.device)
    stages = pipe.cfg.sampler.num_stages
    rows = []
    for steps_text in args.steps:
        first, later = pair(steps_text, int)
        steps = ((first,) * stages, (later,) * stages)
        for guidance_text in args.guidance:
            guidance = pair(guidance_text, float)
            acc = evaluate(pipe, encoder, args.prompts, args.batch, guidance, steps)["accuracy"]
            row = {"guidance": list(guidance), "steps": [list(s) for s in steps], "accuracy": acc}
            rows.append(row)
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    best = max(rows, key=lambda r: (r["accuracy"]["all"], r["accuracy"]["color"]))
    print("best", json.dumps(best))
    return rows


if __name__ == "__main__":
    main()
