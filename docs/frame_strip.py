"""Frame strip of the quick-start video: the packaged tiny model's output for the README's default prompt.

python docs/frame_strip.py                      # writes docs/quickstart-strip.png, prints the timings

Generates the clip exactly as `m4v up --generate "a red circle moving right"` does (tiny preset on the CPU,
the preset's default size, length and steps), twice: the first run warms up, the second is timed (the model
card's "CPU generation after warm-up" number). Every other frame is pasted left to right into one PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.pipeline import VideoPipeline  # noqa: E402
from model.pipeline_types import GenerationRequest  # noqa: E402

PROMPT = "a red circle moving right"


def strip(frames: np.ndarray, every: int = 2) -> Image.Image:
    """(F, H, W, 3) uint8 -> one row of every `every`-th frame, 2 px apart on white."""
    picked = frames[::every]
    h, w = picked.shape[1:3]
    out = Image.new("RGB", (len(picked) * (w + 2) - 2, h), "white")
    for i, f in enumerate(picked):
        out.paste(Image.fromarray(f), (i * (w + 2), 0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "quickstart-strip.png")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    pipe = VideoPipeline.from_preset("tiny", device="cpu")
    w, h = pipe.cfg.default_resolution
    req = GenerationRequest(
        prompt=PROMPT, width=w, height=h, num_frames=pipe.cfg.default_frames, seed=args.seed
    )
    seconds = []
    for _ in range(2):
        began = time.perf_counter()
        result = pipe.generate(req)
        seconds.append(time.perf_counter() - began)
    strip(result.frames).save(args.out, optimize=True)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "frames": int(result.frames.shape[0]),
                "first_s": round(seconds[0], 2),
                "after_warm_up_s": round(seconds[1], 2),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
