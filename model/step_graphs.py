"""CUDA graphs for the cached step: one capture per context cache (= per (unit, stage)), replayed per step.

Within one (unit, stage) every cached step has the same shapes and reads the same cache tensors, so the step
is captured once into a graph with static input buffers (x, t) and replayed for the remaining steps: one
launch instead of hundreds of small kernels. A new cache or shape re-captures; the previous graph is dropped.

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
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Step = Callable[[Tensor, Tensor, Any], Tensor]  # (x, t, cache) -> velocity


class StepGraphs:
    def __init__(self, step: Step, warmup: int = 2, reuse_warmup: bool = False) -> None:
        self.step = step
        self.warmup = warmup
        # reuse_warmup (RuntimeOptions.graph_lean_capture): the last warm-up step's output is returned as the
        # step's result instead of replaying the fresh graph for it, one step fewer per (unit, stage)
        self.reuse_warmup = reuse_warmup
        self.captures = 0  # how many graphs were captured (one per (unit, stage) in a generation)
        self._cache: Any = None
        self._key: tuple[object, ...] | None = None
        self._x: Tensor | None = None
        self._t: Tensor | None = None
        self._out: Tensor | None = None
        self._graph: Any = None
        self._pool: Any = None  # torch.cuda.MemPool shared by every capture of this object
        self.failed: str | None = None  # why capturing was given up (then every step runs eagerly)

    def reset(self) -> None:
        """Drop the captured graph and the cache it reads (frees their memory)."""
        self._cache = self._key = self._x = self._t = self._out = self._graph = None

    def run(self, x: Tensor, t: Tensor, cache: Any) -> Tensor:
        key = (tuple(x.shape), x.dtype, x.device, tuple(t.shape), t.dtype)
        if cache is not self._cache or key != self._key:
            first = self._capture(x, t, cache, key)
            if first is not None and self.reuse_warmup:  # the warm-up ran on these inputs: it is this step
                return first
        assert self._x is not None and self._t is not None and self._out is not None
        self._x.copy_(x)
        self._t.copy_(t)
        if self._graph is not None:
            self._graph.replay()
        else:
            self._out.copy_(self.step(self._x, self._t, cache))
        return self._out.clone()

    def _capture(self, x: Tensor, t: Tensor, cache: Any, key: tuple[object, ...]) -> Tensor | None:
        """Capture the step for this cache and shape. Returns the last warm-up step's output (the step's
        result for x, t: computing it again by a replay would only repeat the work), None without one."""
        self.reset()
        self._cache, self._key = cache, key
        self._x, self._t = x.clone(), t.clone()
        self.captures += 1
        if x.device.type != "cuda" or self.failed is not None:
            self._out = self.step(self._x, self._t, cache)
            return None
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        first: Tensor | None = None
        with torch.cuda.stream(side):  # warm-up allocates lazily built buffers outside the capture
            for _ in range(self.warmup):
                first = self.step(self._x, self._t, cache)
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
                out = self.step(self._x, self._t, cache)
        except Exception as e:  # noqa: BLE001 - any capture failure: fall back to eager, say why once
            self.failed = f"{type(e).__name__}: {e}"
            log.error("CUDA graph capture failed; cached steps run eagerly from now on: %s", self.failed)
            del graph
            self._out = self.step(self._x, self._t, cache)
            return None
        self._out, self._graph = out, graph
        return first
