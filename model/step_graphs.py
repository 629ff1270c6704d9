"""CUDA graphs for the cached step: one capture per context cache (= per (unit, stage)), replayed per step.

Within one (unit, stage) every cached step has the same shapes and reads the same cache tensors, so the step
is captured once into a graph with static input buffers (x, t) and replayed for the remaining steps: one
launch instead of hundreds of small kernels. A new cache or shape re-captures; the least recently used graph
beyond `keep` is dropped (keep=1: the previous one).

Every capture allocates from ONE memory pool that this object keeps alive (a torch.cuda.MemPool): the pool
of a dropped graph is reused by the next capture. (Reusing a bare pool id after its graph was freed while
tensors of it were still alive trips the caching allocator's `use_count > 0` assert: the first GPU crash.)
A capture that fails ends the capture, logs why, and the object falls back to eager steps for good, so one
failure never leaves the CUDA RNG or allocator in capture state for the rest of the process.
Replays return a clone of the static output, so callers may keep it.
On a CPU there is nothing to capture: the same static-buffer logic runs eagerly (what the tests check).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Step = Callable[[Tensor, Tensor, Any], Tensor]  # (x, t, cache) -> velocity


@dataclass
class _Entry:
    """One captured step: the cache it reads, its static inputs and output, its graph (None: eager)."""

    cache: Any
    x: Tensor
    t: Tensor
    out: Tensor | None = None
    graph: Any = None


class StepGraphs:
    def __init__(self, step: Step, warmup: int = 2, reuse_warmup: bool = False, keep: int = 1) -> None:
        self.step = step
        self.warmup = warmup
        # reuse_warmup (RuntimeOptions.graph_lean_capture): the last warm-up step's output is returned as the
        # step's result instead of replaying the fresh graph for it, one step fewer per (unit, stage)
        self.reuse_warmup = reuse_warmup
        # graphs kept at once, the least recently used dropped first: 1 when every (unit, stage) brings a new
        # cache; more when caches are persistent per shape (RuntimeOptions.graph_fixed_shapes), so a stage's
        # graph is replayed again at the next unit instead of captured anew
        self.keep = keep
        self.captures = 0  # how many graphs were captured (one per (unit, stage) in a generation)
        self._entries: OrderedDict[tuple[object, ...], _Entry] = OrderedDict()
        self._pool: Any = None  # torch.cuda.MemPool shared by every capture of this object
        self.failed: str | None = None  # why capturing was given up (then every step runs eagerly)

    def reset(self) -> None:
        """Drop the captured graphs and the caches they read (frees their memory)."""
        self._entries.clear()

    def drop(self, cache: Any) -> None:
        """Forget the graphs that read `cache` (it will not be used again)."""
        for key in [k for k, e in self._entries.items() if e.cache is cache]:
            del self._entries[key]

    def run(self, x: Tensor, t: Tensor, cache: Any) -> Tensor:
        key = (id(cache), tuple(x.shape), x.dtype, x.device, tuple(t.shape), t.dtype)
        entry = self._entries.get(key)
        if entry is None or entry.cache is not cache:
            entry, first = self._capture(x, t, cache, key)
            if first is not None and self.reuse_warmup:  # the warm-up ran on these inputs: it is this step
                return first
        self._entries.move_to_end(key)
        assert entry.out is not None
        entry.x.copy_(x)
        entry.t.copy_(t)
        if entry.graph is not None:
            entry.graph.replay()
        else:
            entry.out.copy_(self.step(entry.x, entry.t, cache))
        return entry.out.clone()

    def _capture(
        self, x: Tensor, t: Tensor, cache: Any, key: tuple[object, ...]
    ) -> tuple[_Entry, Tensor | None]:
        """Capture the step for this cache and shape. Returns the entry and the last warm-up step's output
        (the step's result for x, t: computing it again by a replay would only repeat the work), None
        without one."""
        self._entries.pop(key, None)
        while len(self._entries) >= self.keep:
            self._entries.popitem(last=False)
        entry = _Entry(cache, x.clone(), t.clone())
        self._entries[key] = entry
        self.captures += 1
        if x.device.type != "cuda" or self.failed is not None:
            entry.out = self.step(entry.x, entry.t, cache)
            return entry, None
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        first: Tensor | None = None
        with torch.cuda.stream(side):  # warm-up allocates lazily built buffers outside the capture
            for _ in range(self.warmup):
                first = self.step(entry.x, entry.t, cache)
        main = torch.cuda.current_stream(x.device)
        main.wait_stream(side)
        if first is not None and self.reuse_warmup:
            first.record_stream(main)  # made on the side stream, read on the main one
        if self._pool is None:
            self._pool = torch.cuda.MemPool()
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the overlapped VAE decode goes on in its own thread and stream during capture
            with torch.cuda.graph(graph, pool=self._pool.id, capture_error_mode="thread_local"):
                out = self.step(entry.x, entry.t, cache)
        except Exception as e:  # noqa: BLE001 - any capture failure: fall back to eager, say why once
            self.failed = f"{type(e).__name__}: {e}"
            log.error("CUDA graph capture failed; cached steps run eagerly from now on: %s", self.failed)
            del graph
            entry.out = self.step(entry.x, entry.t, cache)
            return entry, None
        entry.out, entry.graph = out, graph
        return entry, first
