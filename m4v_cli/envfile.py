"""Settings files for `m4v up`: `.env` in the working directory and `--config FILE`, both of KEY=VALUE lines
(`export ` prefixes, quotes, blank lines and # comments allowed). The process environment wins over
--config, which wins over .env."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class EnvFileError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise EnvFileError(f"{path}:{number}: not KEY=VALUE")
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match.group(1)] = value
    return values


def apply_env_files(
    config: Path | None, cwd: Path | None = None, environ: MutableMapping[str, str] | None = None
) -> list[Path]:
    """Load .env (if present) and config (must exist) into environ without overriding what is set there;
    the files read."""
    environ = os.environ if environ is None else environ
    dotenv = (cwd or Path.cwd()) / ".env"
    files = [p for p in (dotenv,) if p.is_file()]
    if config is not None:
        if not config.is_file():
            raise EnvFileError(f"--config {config}: no such file")
        files.append(config)
    merged: dict[str, str] = {}
    for path in files:
        merged.update(read_env_file(path))
    for key, value in merged.items():
        environ.setdefault(key, value)
    return files
