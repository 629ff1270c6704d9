"""A fleet as the API sees it, written to Redis the way workers write it (tests only)."""

from __future__ import annotations

from typing import Any

from m4v_core import JobStore
from m4v_core.heartbeat import Heartbeat, write_heartbeat
from model.config import get_preset
from model.flops import estimate_flops

TINY = get_preset("tiny")


def tiny_flops(num_frames: int) -> float:
    return estimate_flops(TINY, width=128, height=128, num_frames=num_frames).total


def publish_worker(store: JobStore, name: str, **fields: Any) -> None:
    """A live, loaded worker's heartbeat (m4v_core.heartbeat, as worker/heartbeat.py writes it)."""
    beat = Heartbeat(name=name, preset="tiny", device="cuda", model_loaded=True, **fields)
    write_heartbeat(store.r, store.keys, beat, ttl_s=60)
