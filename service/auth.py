"""Who is calling. Open mode for now: every caller is the anonymous owner (None).

API keys come later: this is the one place that will map a key to a hashed owner id, and raise
401/403 through service.errors. Routes already scope jobs and idempotency keys by owner.
"""

from __future__ import annotations

from fastapi import Request

OPEN_OWNER = "open"  # the owner segment of idempotency keys in open mode


def current_owner(request: Request) -> str | None:
    """The caller's owner id; None in open mode."""
    del request
    return None


def owner_key(owner: str | None) -> str:
    return owner or OPEN_OWNER
