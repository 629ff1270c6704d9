"""Failpoints: named places in the code where a test can make this process die, to aim crashes at a phase.

TESTS ONLY. A failpoint does nothing unless the process environment arms it:

    M4V_TEST_FAILPOINTS="after_pop=1,mid_upload=3"

means: SIGKILL this process the 1st time it reaches `hit("after_pop")`, and the 3rd time it reaches
`hit("mid_upload")`. Before killing itself the process writes one line, `m4v-failpoint fired: <name> #<n>`,
to stderr, so a test can tell an aimed death from any other. The variable is read once, at the first hit();
unset or empty (every real deployment), hit() is one dict lookup on an empty dict. It is not a Settings field:
M4V_TEST_* variables belong to the test suite (like M4V_TEST_REDIS_URL), never to an operator.

The points (where the chaos test, tests/e2e/test_chaos.py, aims its kills):
  after_pop             worker/dequeue.py: the job was moved into its queue's intermediate list, rq has not
                        registered it as started
  before_start          worker/jobs.py: rq registered the job as started, the record is still `queued`
  mid_upload            worker/job_results.py: the MP4 is in S3, the thumbnail and metadata are not
  before_terminal_write worker/jobs.py: the terminal transaction (status, `done`, webhook, lease) is queued
                        in the client's MULTI but not sent
  after_terminal_write  worker/jobs.py: the terminal transaction committed, the worker's follow-up (metrics,
                        rq's bookkeeping of the finished job) not done
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "M4V_TEST_FAILPOINTS"
POINTS = ("after_pop", "before_start", "mid_upload", "before_terminal_write", "after_terminal_write")
MARKER = "m4v-failpoint fired:"

_armed: dict[str, int] | None = None  # name -> the hit that kills; parsed at the first hit()
_hits: dict[str, int] = {}


def parse(spec: str) -> dict[str, int]:
    """The armed points of a spec: "a=1,b=2" -> {"a": 1, "b": 2} ("a" alone means "a=1"). A name not in
    POINTS, or a count below 1, is a ValueError: a misspelt failpoint would never fire, and the test aiming it
    would prove nothing."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("=")
        name = name.strip()
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {', '.join(POINTS)})")
        n = int(count) if count.strip() else 1
        if n < 1:
            raise ValueError(f"{ENV}: {item!r}: the count must be at least 1")
        armed[name] = n
    return armed


def hit(name: str) -> None:
    """Count one pass through failpoint `name`; SIGKILL this process if that pass is the armed one."""
    global _armed
    if _armed is None:
        _armed = parse(os.environ.get(ENV, ""))
    if name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _armed[name]:
        sys.stderr.write(f"{MARKER} {name} #{_hits[name]}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
