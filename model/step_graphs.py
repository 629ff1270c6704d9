"""CUDA graphs for the cached step: one capture per context cache (= per (unit, stage)), replayed per step.

Within one (unit, stage) every cached step has the same shapes and reads the same cache tensors, so the step
is captured once into a graph with static input buffers (x, t) and replayed for the remaining steps: one
launch instead of hundreds of small kernels. A new cache or shape re-captures (graphs share one memory pool,
the previous one is dropped). Replays return a clone of the static output, so callers may keep it.
On a CPU there is nothing to capture: the same static-buffer logic runs eagerly (what the tests check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Step = Callable[[Tensor, Tensor, Any], Tensor]  # (x, t, cache) -> velocity


class StepGraphs:
    def __init__(self, step: Step, warmup: int = 2) -> None:
        self.step = step
        self.warmup = warmup
        self.captures = 0  # how many graphs were captured (one per (unit, stage) in a generation)
        self._cache: Any = None
        self._key: tuple[object, ...] | None = None
        self._x: Tensor | None = None
        self._t: Tensor | None = None
        self._out: Tensor | None = None
        self._graph: Any = None
        self._pool: Any = None

    def reset(self) -> None:
        """Drop the captured graph and the cache it reads (frees their memory)."""
        self._cache = self._key = self._x = self._t = self._out = self._graph = None

    def run(self, x: Tensor, t: Tensor, cache: Any) -> Tensor:
        key = (tuple(x.shape), x.dtype, x.device, tuple(t.shape), t.dtype)
        if cache is not self._cache or key != self._key:
            self._capture(x, t, cache, key)
        assert self._x is not None and self._t is not None and self._out is not None
        self._x.copy_(x)
        self._t.copy_(t)
        if self._graph is not None:
            self._graph.replay()
        else:
            self._out.copy_(self.step(self._x, self._t, cache))
        return self._out.clone()

    def _capture(self, x: Tensor, t: Tensor, cache: Any, key: tuple[object, ...]) -> None:
        self.reset()
        self._cache, self._key = cache, key
        self._x, self._t = x.clone(), t.clone()
        self.captures += 1
        if x.device.type != "cuda":
            self._out = self.step(self._x, self._t, cache)
            return
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up allocates lazily built buffers outside the capture
            for _ in range(self.warmup):
                self.step(self._x, self._t, cache)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._out = self.step(self._x, self._t, cache)
        self._pool = graph.pool()
        self._graph = graph
