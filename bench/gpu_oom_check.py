"""CUDA out of memory at the job boundary, checked on a real GPU (issue "Reliability and security").

An over-sized request (241 frames at 1280x768 under a memory cap) must fail as the worker maps it
(worker/faults.py: error.type out_of_memory), the memory it held must be given back, and the same process must
then run a normal request. Random weights and stand-in text: memory, not quality, is under test.

    python bench/gpu_oom_check.py                       # m4v-768p, 16 GiB cap; JSON to $OUT/oom_check.json
    python bench/gpu_oom_check.py --cap-gib 8 --preset attn-768p

Exit code 0 only if every check passed. Needs CUDA (the scan kernels are used when importable) and the
worker's pydantic/pydantic-settings (for worker.faults); carry wheels if the GPU box lacks them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.pipeline import VideoPipeline  # noqa: E402
from model.pipeline_types import GenerationRequest  # noqa: E402
from worker.faults import oom_error  # noqa: E402

MIB = 1 << 20
SLACK_BYTES = 64 * MIB  # allocator rounding between two idle states


def request(width: int, height: int, frames: int) -> GenerationRequest:
    one_step = (1, 1, 1)
    return GenerationRequest(
        prompt="a red ball", width=width, height=height, num_frames=frames, seed=0,
        first_frame_steps=one_step, later_frame_steps=one_step,
    )  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="m4v-768p")
    p.add_argument("--cap-gib", type=float, default=16.0, help="per-process memory cap for the check")
    p.add_argument("--frames", type=int, default=241, help="frames of the over-sized request")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 1024 * MIB / total))
    pipe = VideoPipeline.from_preset(
        args.preset, device="cuda", dtype=torch.bfloat16, stand_in_text=True, allow_random_weights=True
    )
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated()
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report.update(preset=args.preset, cap_gib=args.cap_gib, loaded_bytes=loaded)

    began = time.perf_counter()
    try:
        pipe.generate(request(1280, 768, args.frames))
        report["oversized"] = {"outcome": "succeeded (no OOM: lower --cap-gib)"}
    except torch.cuda.OutOfMemoryError as exc:  # what worker/jobs.py JobRun.run catches
        err = oom_error(exc)
        report["oversized"] = {"outcome": "failed", "error": err.model_dump()}
    report["oversized"]["seconds"] = round(time.perf_counter() - began, 2)
    after = torch.cuda.memory_allocated()
    report.update(allocated_after_oom=after, reserved_after_oom=torch.cuda.memory_reserved())

    small = pipe.generate(request(640, 384, 9))
    report["next_job"] = {"frames": list(small.frames.shape), "peak_bytes": torch.cuda.max_memory_allocated()}

    error = report["oversized"].get("error") or {}
    checks = {
        "oversized_failed_out_of_memory": error.get("type") == "out_of_memory",
        "memory_back_to_loaded": after <= loaded + SLACK_BYTES,
        "next_job_ran": small.frames.shape[0] == 9,
    }
    report["checks"] = checks
    out = Path(os.environ.get("OUT", ROOT / "gpu-check-out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "oom_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
