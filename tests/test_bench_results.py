"""bench/results_json.py: which e2e runs count, and the ratios the GPU-speed issue tracks."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_json import fold, of_run  # noqa: E402


def run(preset: str, frames: int, seconds: float, **kw: object) -> dict[str, object]:
    line = {"preset": preset, "frames": frames, "seconds": seconds, "variant": "v", "device": "H100"}
    return {**line, "peak_mem_gb": 30.0, "mp4_bytes": 1, **kw}


def test_a_faster_run_that_changed_the_video_or_fell_back_does_not_count() -> None:
    lines = [
        run("m4v-768p", 121, 40.0),
        run("m4v-768p", 121, 20.0, check_max_abs_diff=37.0),  # different video: not a speed-up
        run("m4v-768p", 121, 25.0, graph_fallback="RuntimeError: capture"),
        run("attn-768p", 121, 60.0),
        run("m4v-768p", 241, 84.0),
    ]
    out = fold(lines, None)
    assert out["m4v_e2e_121f_s_measured"] == 40.0
    assert out["speedup_121f_measured"] == 1.5
    assert abs(out["cost_per_video_second_ratio_241_121_measured"] - 1.05) < 1e-9
    assert out["targets_met"]["speedup_121f_measured"] is True
    assert out["targets_met"]["m4v_e2e_121f_s_measured"] is False
    assert out["mp4_encode_included"] is True


def test_missing_runs_leave_their_keys_out() -> None:
    out = fold([run("m4v-768p", 121, 50.0, mp4_bytes=None)], None)
    assert "speedup_121f_measured" not in out and "m4v_e2e_241f_s_measured" not in out
    assert out["targets_met"]["speedup_121f_measured"] is None
    assert out["mp4_encode_included"] is False


def test_one_run_is_compared_with_itself_only() -> None:
    lines = [
        run("m4v-768p", 121, 40.0, run=3),
        run("attn-baseline", 121, 48.0, run=3),
        run("attn-baseline", 121, 44.0, run=2),  # another day's machine: not this run's baseline
    ]
    out = fold(of_run(lines, 3), None)
    assert out["speedup_121f_measured"] == 1.2
    assert out["runs"] == [3]
    assert fold(of_run(lines, None), None)["speedup_121f_measured"] == 1.1
