"""An atomic pop over our three queues, so that a popped job is always in some list until it is started.

rq pops from several queues with BLPOP: a worker that dies (or loses the reply) between the pop and
registering the job leaves the job in no list and no registry, and its record `queued` for ever. rq moves
the job atomically into the queue's intermediate list only when a worker listens on one queue (BLMOVE).

M4VQueue.lpop instead runs one Lua script that LMOVEs the first job of the first non-empty queue (in the
given priority order) into that queue's intermediate list, and polls every POLL_S while all are empty (no
command blocks on the server, so the client's socket timeout can stay short). M4VWorker removes the job from
the intermediate list in the same transaction that registers it as started; the reaper
(worker/recovery.py) requeues one that stays there, unstarted, for two leases (2 x job_lease_s).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.intermediate_queue import IntermediateQueue

from m4v_core import failpoints

POLL_S = 0.2  # while every queue is empty: one script call per worker per POLL_S

# KEYS: queue, its intermediate list, queue, its intermediate list, ... in priority order.
_POP_LUA = """
for i = 1, #KEYS, 2 do
  local id = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  if id then return {KEYS[i], id} end
end
return false
"""


def pop_into_intermediate(connection: Redis, queue_keys: Sequence[str]) -> tuple[Any, Any] | None:
    keys: list[str] = []
    for key in queue_keys:
        keys += [key, IntermediateQueue.get_intermediate_queue_key(key)]
    result = connection.register_script(_POP_LUA)(keys=keys)
    return (result[0], result[1]) if result else None


class M4VQueue(Queue):
    @classmethod
    def lpop(
        cls, queue_keys: Sequence[str], timeout: int | None, connection: Redis | None = None
    ) -> tuple[Any, Any] | None:
        """rq's multi-queue pop, made atomic (see the module docstring). timeout None: one try; else poll
        until a job comes or timeout seconds pass (DequeueTimeout, as rq's BLPOP variant raises)."""
        assert connection is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            popped = pop_into_intermediate(connection, queue_keys)
            if popped is not None:
                failpoints.hit("after_pop")  # tests: die holding a job no registry knows yet
            if popped is not None or deadline is None:
                return popped
            if time.monotonic() >= deadline:
                raise DequeueTimeout(timeout, queue_keys)
            time.sleep(POLL_S)
