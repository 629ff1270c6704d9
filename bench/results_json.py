"""Fold the per-process e2e lines (bench/e2e_run.py via bench/gpu_round.sh) into one results JSON with the
keys the "GPU speed" issue tracks, next to the per-shape estimates of bench/gpu_bench.py when given:

    python bench/results_json.py --e2e bench/results/2026-12-06-nvidia-h100-80gb-hbm3-e2e.jsonl \\
        [--estimates bench/results/<date>-<card>.json] --out bench/results/<date>-<card>-e2e.json

With --run N only that run's lines count (lines carry "run" from the third H100 run on): a speed-up compares
two presets measured on the same machine and software. For each preset and length the fastest variant whose
--check (when it ran) left the video unchanged is taken.
A key whose run is missing is absent: a missing measurement is never filled from an estimate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TARGETS = {  # from the issue: key -> (comparison, bound)
    "m4v_e2e_121f_s_measured": ("<=", 30.0),
    "speedup_121f_measured": (">=", 1.3),
    "speedup_481f": (">=", 1.6),
    "cost_per_video_second_ratio_241_121_measured": ("<=", 1.05),
    "peak_mem_gb_121f_measured": ("<=", 40.0),
    "mfu_stage2": (">=", 0.5),
}
MAX_CHECK_DIFF = 2.0  # 8-bit levels: bf16 noise, not a different video


def best(lines: list[dict[str, Any]], preset: str, frames: int) -> dict[str, Any] | None:
    ok = [
        r
        for r in lines
        if r["preset"] == preset
        and r["frames"] == frames
        and not r.get("graph_fallback")
        and r.get("check_max_abs_diff", 0.0) <= MAX_CHECK_DIFF
    ]
    return min(ok, key=lambda r: r["seconds"]) if ok else None


def fold(lines: list[dict[str, Any]], estimates: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if estimates:
        out.update(
            {k: v for k, v in estimates.items() if k in ("card", "torch", "mfu_stage2", "speedup_481f")}
        )
    runs = {}
    # attn: M4V's own attention baseline (bench/e2e_run.py "attn-baseline"; "attn-768p" in runs made before
    # that preset switched to PyramidFlow's maths, when the two were the same network)
    for name, preset in (("m4v", "m4v-768p"), ("attn", "attn-baseline"), ("attn", "attn-768p")):
        for frames in (121, 241):
            r = best(lines, preset, frames)
            if r is not None and f"{name}_{frames}" not in runs:
                runs[f"{name}_{frames}"] = r
                out[f"{name}_e2e_{frames}f_s_measured"] = r["seconds"]
                out[f"{name}_e2e_{frames}f_variant"] = r["variant"]
                out.setdefault("card", r["device"])
    if "m4v_121" in runs:
        out["peak_mem_gb_121f_measured"] = runs["m4v_121"]["peak_mem_gb"]
        if "attn_121" in runs:
            out["speedup_121f_measured"] = runs["attn_121"]["seconds"] / runs["m4v_121"]["seconds"]
        if "m4v_241" in runs:  # seconds per second of video: (frames - 1) / fps, same fps for both
            out["cost_per_video_second_ratio_241_121_measured"] = (runs["m4v_241"]["seconds"] / 240) / (
                runs["m4v_121"]["seconds"] / 120
            )
    out["runs"] = sorted({r["run"] for r in runs.values() if "run" in r})
    out["mp4_encode_included"] = all(r.get("mp4_bytes") is not None for r in runs.values())
    out["targets_met"] = {k: _met(out.get(k), *TARGETS[k]) for k in TARGETS}
    return out


def of_run(lines: list[dict[str, Any]], run: int | None) -> list[dict[str, Any]]:
    """The lines of one run (None: all); the result says which."""
    return lines if run is None else [r for r in lines if r.get("run") == run]


def _met(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return value <= bound if op == "<=" else value >= bound


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--e2e", type=Path, required=True)
    p.add_argument("--estimates", type=Path, default=None)
    p.add_argument("--run", type=int, default=None, help="only lines with this run number")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    lines = of_run([json.loads(x) for x in args.e2e.read_text().splitlines() if x.strip()], args.run)
    estimates = json.loads(args.estimates.read_text()) if args.estimates else None
    result = fold(lines, estimates)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
