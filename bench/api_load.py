"""API load test: POST /generate against uvicorn on loopback, workers paused (none running: jobs only queue).

One paused worker publishes a heartbeat with a measured FLOP rate (as a real, idle-but-loaded fleet does), so
every POST answers with an ETA over the queue ahead of it; --no-fleet leaves it out.

    python bench/api_load.py                         # 200 req/s open loop for 20 s, then a closed-loop max
    python bench/api_load.py --rate 300 --duration 30 --concurrency 32 --markdown

The API runs as in production: auth_mode=keys with a Bearer key, the per-key rate limit on (set far above the
offered load, so its Redis round trip is paid but nothing is refused), real Redis, one uvicorn process. The
open-loop phase sends on a fixed schedule and measures each latency from its *scheduled* send time, so a
stalled server cannot hide queueing delay (no coordinated omission). Prints the machine and a table; paste
it into docs/PERF.md under "API load".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import redis
import uvloop

from m4v_core.keys import Keys
from service.auth import key_entry, new_api_key
from worker.heartbeat import HeartbeatWriter, WorkerState

log = logging.getLogger("bench.api_load")
ROOT = Path(__file__).resolve().parent.parent
BODY = {"prompt": "a red ball bouncing on a wooden floor", "num_frames": 17, "seed": 1}
BODY_BYTES = json.dumps(BODY).encode()
JSON = {"Content-Type": "application/json"}


@dataclass
class Phase:
    name: str
    offered: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    seconds: float = 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def row(self) -> str:
        done = sum(self.statuses.values())
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        codes += f", transport errors: {self.errors}" if self.errors else ""
        return (
            f"| {self.name} | {self.offered} | {done} | {codes}"
            f" | {done / self.seconds:.0f} | {self.pct(50):.1f} | {self.pct(90):.1f} | {self.pct(99):.1f}"
            f" | {max(self.latencies_ms, default=float('nan')):.1f} |"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def start_api(port: int, redis_url: str, prefix: str, key: str, rate_limit: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "M4V_REDIS_URL": redis_url,
        "M4V_KEY_PREFIX": prefix,
        "M4V_AUTH_MODE": "keys",
        "M4V_API_KEYS": f'["{key_entry("bench", key)}"]',
        "M4V_RATE_LIMIT_REQUESTS": str(rate_limit),
        "M4V_MAX_QUEUE_DEPTH": "10000000",
        "M4V_PRESET": "tiny",
        "M4V_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(argv, env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the API did not become ready in 30 s")


async def one(client: aiohttp.ClientSession, phase: Phase, started: float) -> None:
    try:
        async with client.post("/generate", data=BODY_BYTES, headers=JSON) as response:
            await response.read()
            phase.statuses[response.status] += 1
    except aiohttp.ClientError:
        phase.errors += 1
        return
    phase.latencies_ms.append((time.perf_counter() - started) * 1000)


async def open_loop(client: aiohttp.ClientSession, rate: float, seconds: float, name: str) -> Phase:
    """Send at a fixed rate; latency from each request's scheduled time."""
    phase = Phase(name, f"{rate:.0f} req/s")
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(client, phase, scheduled)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - t0
    return phase


async def closed_loop(client: aiohttp.ClientSession, concurrency: int, seconds: float) -> Phase:
    """concurrency clients back to back: the maximum throughput."""
    phase = Phase("max (closed loop)", f"{concurrency} in flight")
    stop = time.perf_counter() + seconds

    async def user() -> None:
        while time.perf_counter() < stop:
            await one(client, phase, time.perf_counter())

    t0 = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - t0
    return phase


async def run(args: argparse.Namespace, base_url: str, key: str) -> list[Phase]:
    connector = aiohttp.TCPConnector(limit=max(64, args.concurrency * 4))
    headers = {"Authorization": f"Bearer {key}"}
    session = aiohttp.ClientSession(
        base_url, headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    )
    async with session as client:
        await open_loop(client, args.rate, args.warmup, "warm-up")
        phases = [await open_loop(client, args.rate, args.duration, "open loop")]
        if args.concurrency > 0:
            phases.append(await closed_loop(client, args.concurrency, args.max_seconds))
    return phases


def paused_worker(client: redis.Redis, prefix: str) -> HeartbeatWriter:
    """A live, loaded worker that takes no jobs, with a measured FLOP rate: as in production, every POST
    then computes an ETA over the whole queue ahead of it (the costly part of answering)."""
    state = WorkerState(name="bench-paused", preset="tiny", device="cpu", model_loaded=True, flops_per_s=1e12)
    return HeartbeatWriter(client, Keys(prefix), state, period_s=5.0)


def cleanup(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for priority in ("high", "normal", "low"):
        ids: list[bytes] = client.lrange(Keys(prefix).rq_queue(priority), 0, -1)  # type: ignore[assignment]
        for start in range(0, len(ids), 1000):
            client.delete(*[Keys.rq_job(i) for i in ids[start : start + 1000]])
    for pattern in Keys(prefix).everything():
        keys = list(client.scan_iter(match=pattern, count=5000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("M4V_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="open-loop seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="open-loop seconds not measured")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients; 0 = skip")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="closed-loop seconds")
    parser.add_argument(
        "--no-fleet", action="store_true", help="no paused worker: POSTs skip the ETA (no rate known)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would load the generator

    prefix = f"m4vbench{uuid.uuid4().hex[:8]}"
    key, port = new_api_key(), free_port()
    heartbeat = None
    if not args.no_fleet:
        heartbeat = paused_worker(redis.Redis.from_url(args.redis_url), prefix).start()
    api = start_api(port, args.redis_url, prefix, key, rate_limit=10_000_000)
    try:
        phases = uvloop.run(run(args, f"http://127.0.0.1:{port}", key))
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        api.terminate()
        api.wait(timeout=10)
        cleanup(args.redis_url, prefix)
    lines = [
        f"Machine: {machine()}; uvicorn 1 process, httptools={_has('httptools')}, uvloop={_has('uvloop')};"
        f" {'no worker heartbeat' if args.no_fleet else 'one paused worker heartbeat (ETAs computed)'};"
        f" load generator (aiohttp on uvloop) on the same machine; {time.strftime('%Y-%m-%d')}",
        "",
        "| phase | offered | requests | status codes | req/s done | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
        *(p.row() for p in phases),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    open_phase = phases[0]
    ok = open_phase.statuses.get(202, 0) == sum(open_phase.statuses.values()) and not open_phase.errors
    log.info(
        "open loop p99 %.1f ms (target <= 15 ms): %s",
        open_phase.pct(99),
        "met" if open_phase.pct(99) <= 15 else "MISSED",
    )
    return 0 if ok else 1


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
