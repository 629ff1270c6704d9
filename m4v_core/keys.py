"""Every Redis key this service reads or writes, spelled here and nowhere else.

Families (p = Settings.key_prefix, "m4v" by default):
  {p}:job:{id}              string: JSON JobRecord, the truth about a job (m4v_core/store.py)
  {p}:job:{id}:events       stream of {type, data}; the stream id is the SSE event id
  {p}:job:{id}:cancel       string: a client asked to stop a running job; the worker stops at its next step
  {p}:idem:{owner}:{key}    string: "<body sha256> <job id>" for Idempotency-Key, "pending <sha256> <id>"
                            while a request stores that job (10 s TTL; service/idempotency.py)
  {p}:owner:{owner}:jobs    zset (all scores 0): "<created µs, 16 digits>:<job id>" of an owner's jobs, for
                            listing in creation order with exclusive cursors (service/joblist.py)
  {p}:job:{id}:deleted      string: a client deleted this job while it ran; reads answer 404 (service/jobs.py)
  {p}:worker:{name}         string: JSON Heartbeat of a live worker, with a TTL (m4v_core/heartbeat.py)
  {p}:workers               zset: worker name -> unix time its heartbeat expires (no SCAN on hot paths)
  {p}:active                zset: "<job id>:<attempt id>" -> lease deadline, server clock (worker/leases.py)
  {p}:draining              zset: job id -> when a SIGTERM drain put it back to `queued` (worker/shutdown.py)
  {p}:throughput:{preset}   hash: decayed FLOP/seconds sums of a preset per GPU count (m4v_core/throughput.py)
  {p}:job_flops             hash: job id -> FLOPs it still has to spend (ETAs, admission)
  {p}:webhooks:due          zset: webhook id -> when its next attempt is due (m4v_core/webhooks.py)
  {p}:webhooks:payload      hash: webhook id -> Delivery JSON
  {p}:webhooks:progress:{id} string with a TTL: a progress webhook of that job went out recently (throttle)
  {p}:owner:{owner}:inflight  hash: ids of an API key's jobs that may be in flight (service/quota.py)
  {p}:ratelimit:{caller}    string: GCRA theoretical arrival time in µs (service/ratelimit.py)
  {p}:reaper:lock           string: the one worker looking for abandoned jobs right now (worker/recovery.py)
  {p}-high/-normal/-low     rq queue names (rq adds its own rq:queue:/rq:job: keys around them)
"""

from __future__ import annotations

from dataclasses import dataclass

from m4v_core.models import PRIORITIES, Priority


@dataclass(frozen=True)
class Keys:
    prefix: str = "m4v"

    # --- jobs ---
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def idempotency(self, owner: str, key: str) -> str:
        return f"{self.prefix}:idem:{owner}:{key}"

    def owner_jobs(self, owner: str) -> str:
        """Sorted set of one owner's jobs, members "<created µs>:<id>" (service/joblist.py)."""
        return f"{self.prefix}:owner:{owner}:jobs"

    def deleted(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:deleted"

    # --- workers ---
    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def worker_index(self) -> str:
        """Sorted set: worker name -> unix time its heartbeat expires (no keyspace SCAN on hot paths)."""
        return f"{self.prefix}:workers"

    def active(self) -> str:
        """Sorted set: "<job id>:<attempt id>" of every running attempt -> its lease deadline (unix time on
        the Redis server's clock); worker/leases.py."""
        return f"{self.prefix}:active"

    def draining(self) -> str:
        """Sorted set: job id -> unix time its record went back to `queued` on a SIGTERM drain; the worker
        removes it once the job is back in its rq queue (worker/shutdown.py)."""
        return f"{self.prefix}:draining"

    def reaper_lock(self) -> str:
        return f"{self.prefix}:reaper:lock"

    # --- throughput (m4v_core/throughput.py) ---
    def throughput(self, preset: str) -> str:
        return f"{self.prefix}:throughput:{preset}"

    def job_flops(self) -> str:
        return f"{self.prefix}:job_flops"

    # --- webhook outbox (m4v_core/webhooks.py) ---
    def webhooks_due(self) -> str:
        return f"{self.prefix}:webhooks:due"

    def webhooks_payload(self) -> str:
        return f"{self.prefix}:webhooks:payload"

    def webhook_progress_gate(self, job_id: str) -> str:
        """Set (NX, with a TTL of the throttle interval) when a progress webhook of the job is sent."""
        return f"{self.prefix}:webhooks:progress:{job_id}"

    # --- API ---
    def owner_inflight(self, owner: str) -> str:
        """Hash: ids of the key's jobs that may still be queued or running (per-key limits)."""
        return f"{self.prefix}:owner:{owner}:inflight"

    def ratelimit(self, caller: str) -> str:
        return f"{self.prefix}:ratelimit:{caller}"

    # --- rq queues ---
    def queue(self, priority: Priority) -> str:
        return f"{self.prefix}-{priority}"

    def queues(self) -> list[str]:
        return [self.queue(p) for p in PRIORITIES]

    def rq_queue(self, priority: Priority) -> str:
        """rq's list of job ids waiting in our queue of that priority (rq spells it; read-only for us)."""
        return f"rq:queue:{self.queue(priority)}"

    @staticmethod
    def rq_job(job_id: str | bytes) -> str:
        """rq's hash of one rq job (its id is our job id)."""
        return f"rq:job:{job_id.decode() if isinstance(job_id, bytes) else job_id}"

    def everything(self) -> list[str]:
        """Patterns matching every key of this prefix, rq's included (benchmarks and tests clean up)."""
        return [f"{self.prefix}:*", f"rq:*{self.prefix}*"]


keys = Keys()
