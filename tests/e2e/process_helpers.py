"""Which processes are alive, and which work in a state dir (tests of `m4v up` and its embedded services)."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and ") Z " in stat.read_text())


def pids_of(home: Path) -> list[int]:
    """Processes working in the state dir: weed names it in -dir, redis-server chdirs to its dbdir."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(home) in cmdline or cwd.startswith(str(home)):
            out.append(int(proc.name))
    return out
