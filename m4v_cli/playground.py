"""Where the API started by `m4v up` serves its browser playground (None when M4V_PLAYGROUND=false)."""

from __future__ import annotations

import httpx

PATH = "/playground"  # service/playground.py PATH (the CLI does not import the API's modules)


def playground_url(api_url: str) -> str | None:
    """The playground's URL if the API serves it (its options answer 200), else None."""
    try:
        ok = httpx.get(f"{api_url}{PATH}/options", timeout=5.0).status_code == 200
    except httpx.TransportError:
        return None
    return f"{api_url}{PATH}/" if ok else None
