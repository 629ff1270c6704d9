"""`m4v info` (what a server serves) and `m4v env` (what a bug report needs about this machine)."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.markup import escape

from m4v_cli.output import DEFAULT_SERVER, JsonOpt, KeyOpt, ServerOpt, client, out, print_json, run

SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN")
PACKAGES = (
    "m4v-serve",
    "torch",
    "triton",
    "mamba-ssm",
    "causal-conv1d",
    "transformers",
    "av",
    "fastapi",
    "redis",
    "rq",
)


def info(server: ServerOpt = DEFAULT_SERVER, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """What the server serves: presets, sizes, frame rule, defaults and bounds, limits, version."""

    def body() -> None:
        with client(server, api_key) as m4v:
            data = m4v.info()
        if as_json:
            print_json(data)
            return
        print(f"m4v-serve {data['version']} at {server} (auth {data['auth_mode']})")
        for p in data["presets"]:
            sizes = ", ".join(f"{r['width']}x{r['height']}" for r in p["resolutions"])
            print(
                f"preset {p['name']}: sizes {sizes}; frames {p['frame_multiple']}k+1 up to {p['max_frames']}"
                f" (default {p['default_frames']}); fps default {p['default_fps']}; "
                f"steps per stage {p['first_frame_steps']['default']} / {p['later_frame_steps']['default']}"
            )
        limits = data["limits"]
        print(
            f"limits: prompt {limits['max_prompt_chars']} chars, {limits['rate_limit_requests']} requests "
            f"per {limits['rate_limit_window_s']} s, jobs kept {limits['job_ttl_s']} s"
        )

    run(body)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, device, kernels and weights, without starting anything (torch is imported if installed)."""
    data: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "nvidia_smi": shutil.which("nvidia-smi"),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        data["torch_cuda"] = torch.version.cuda
        data["cuda_available"] = torch.cuda.is_available()
        data["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        data["torch_cuda"] = None
        data["note"] = (
            "no torch: this install can be a client or an API, not a worker (pip install 'm4v-serve[worker]')"
        )
    weights = os.environ.get("M4V_WEIGHTS")
    data["weights"] = {
        "M4V_WEIGHTS": weights,
        "exists": Path(weights).exists() if weights and "://" not in weights else None,
    }
    spec = importlib.util.find_spec("model")
    if spec is not None and spec.origin:
        data["weights"]["tiny_packaged"] = sorted(
            p.name for p in (Path(spec.origin).parent / "weights").glob("*")
        )
    data["settings"] = {k: _redacted(k, v) for k, v in sorted(os.environ.items()) if k.startswith("M4V_")}
    return data


def _redacted(name: str, value: str) -> str:
    """Secrets as <set>; a URL's password (redis://:PASSWORD@host) as ***."""
    if any(word in name for word in SECRET_WORDS):
        return "<set>"
    return re.sub(r"(://[^/@]*:)[^/@]*@", r"\1***@", value)


def env(as_json: JsonOpt = False) -> None:
    """What a bug report needs: versions, device, kernels, weights found, M4V_* settings (secrets hidden)."""

    def body() -> None:
        data = environment()
        if as_json:
            print_json(data)
            return
        for key, value in data.items():
            out.print(f"[bold]{key}[/]: " + escape(str(value)))

    run(body)
