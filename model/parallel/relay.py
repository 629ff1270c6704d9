"""Passing a small tensor along ranks in order: what rank r computes from what rank r-1 passed it.

The sequence-split scan (model/parallel/scan_split.py) needs exactly this: rank r's incoming conv tail and
scan state are the outgoing ones of rank r-1, rank 0 starts from the caller's state. Two implementations of
one protocol: ProcessRelay (torch.distributed point-to-point, one process per rank) and SequentialRelay (all
ranks one after another in one process, the reference the process version is tested against).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import torch.distributed as dist
from torch import Tensor

Step = Callable[[Tensor], Tensor]


class Relay(Protocol):
    """One rank's end of the chain; every rank calls relay() the same number of times, in the same order."""

    def relay(self, start: Tensor, step: Step) -> tuple[Tensor, Tensor]:
        """incoming = start on the first rank, else what the previous rank passed on; outgoing =
        step(incoming) is passed on to the next rank. Returns (incoming, outgoing). `start` must have the
        shape and dtype of what is passed (it is the receive buffer's template)."""
        ...


class ProcessRelay:
    """Ranks 0..R-1 of `group` (the default group when None) in rank order; blocking send/recv."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def _global(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def relay(self, start: Tensor, step: Step) -> tuple[Tensor, Tensor]:
        incoming = start
        if self.rank > 0:
            incoming = start.new_empty(start.shape)
            dist.recv(incoming, src=self._global(self.rank - 1), group=self.group)
        outgoing = step(incoming)
        if self.rank < self.world - 1:
            dist.send(outgoing.contiguous(), dst=self._global(self.rank + 1), group=self.group)
        return incoming, outgoing

    def from_last(self, t: Tensor) -> Tensor:
        """The last rank's `t` on every rank (e.g. the state at the end of the whole sequence)."""
        t = t.contiguous()
        dist.broadcast(t, src=self._global(self.world - 1), group=self.group)
        return t


class SequentialRelay:
    """All ranks in one process, run to completion one after another (rank r before r+1): what rank r passes
    on waits in a queue for rank r+1. Call next_rank() between ranks."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.rank = 0
        self._inbox: deque[Tensor] = deque()
        self._outbox: deque[Tensor] = deque()

    def relay(self, start: Tensor, step: Step) -> tuple[Tensor, Tensor]:
        incoming = start if self.rank == 0 else self._inbox.popleft()
        outgoing = step(incoming)
        if self.rank < self.world - 1:
            self._outbox.append(outgoing)
        return incoming, outgoing

    def next_rank(self) -> None:
        if self._inbox:
            raise RuntimeError(f"rank {self.rank} left {len(self._inbox)} relayed tensors unread")
        self.rank += 1
        self._inbox, self._outbox = self._outbox, deque()
