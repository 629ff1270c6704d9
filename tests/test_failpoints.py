"""m4v_core/failpoints.py: unarmed points do nothing; an armed one SIGKILLs its process at the counted pass,
after writing its marker line to stderr; a misspelt point is refused instead of never firing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from m4v_core import failpoints

ROOT = Path(__file__).resolve().parents[1]


def run_hits(spec: str | None, *names: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that passes the given points in order, printing each pass it survives."""
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    if spec is not None:
        env[failpoints.ENV] = spec
    code = (
        "import sys\nfrom m4v_core import failpoints\n"
        "for name in sys.argv[1:]:\n    failpoints.hit(name)\n    print('passed', name, flush=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *names], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_parse_reads_names_and_counts() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("after_pop=1, mid_upload=3") == {"after_pop": 1, "mid_upload": 3}
    assert failpoints.parse("before_start") == {"before_start": 1}


def test_parse_refuses_an_unknown_point_or_a_count_below_one() -> None:
    with pytest.raises(ValueError, match="after_popp"):
        failpoints.parse("after_popp=1")
    with pytest.raises(ValueError, match="at least 1"):
        failpoints.parse("mid_upload=0")


def test_unarmed_points_do_nothing() -> None:
    out = run_hits(None, "after_pop", "mid_upload", "after_pop")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["passed after_pop", "passed mid_upload", "passed after_pop"]
    assert failpoints.MARKER not in out.stderr


def test_an_armed_point_kills_its_process_at_the_counted_pass_with_a_marker() -> None:
    out = run_hits("mid_upload=2", "after_pop", "mid_upload", "before_start", "mid_upload", "after_pop")
    assert out.returncode == -signal.SIGKILL
    assert out.stdout.splitlines() == ["passed after_pop", "passed mid_upload", "passed before_start"]
    assert f"{failpoints.MARKER} mid_upload #2" in out.stderr
