"""The browser playground: static HTML/JS at /playground/, GET / redirecting there, and the preset's request
options the page builds its form from. Installed only when Settings.playground is on (production: off).

The page calls the public API like any client (POST /generate, GET /jobs/{id}/events, DELETE /jobs/{id});
nothing here bypasses auth: the static files and the options are public, like /openapi.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from service.deps import StateDep

STATIC_DIR = Path(__file__).resolve().parent / "static" / "playground"
PATH = "/playground"

router = APIRouter(tags=["playground"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse(f"{PATH}/", status_code=307)


@router.get(f"{PATH}/options")
def options(state: StateDep) -> dict[str, Any]:
    """The served preset's request options (resolutions, frame rule, defaults), read-only."""
    cfg = state.preset
    return {
        "preset": cfg.name,
        "resolutions": [{"width": w, "height": h} for w, h in cfg.resolutions],
        "frame_multiple": cfg.vae.temporal_factor,  # num_frames is frame_multiple * k + 1
        "max_frames": cfg.max_frames,
        "default_frames": cfg.default_frames,
        "default_fps": cfg.default_fps,
        "first_frame_steps": list(cfg.sampler.first_frame_steps),
        "later_frame_steps": list(cfg.sampler.later_frame_steps),
        "max_prompt_chars": state.settings.max_prompt_chars,
        "auth_mode": state.settings.auth_mode,
    }


def install_playground(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PATH, StaticFiles(directory=STATIC_DIR, html=True), name="playground")
