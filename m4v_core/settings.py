"""Settings (prefix M4V_), split by process and built at start-up, never at import.

CommonSettings   what the API and the workers both read: Redis, the served preset, S3, webhooks, logging
ApiSettings      + what only the API reads (service/): HTTP, auth, rate limits, admission, queue limits
WorkerSettings   + what only a worker reads (worker/): its model section (ModelSettings), leases, S3 uploads
Settings         all of them: for `m4v up`, the Helm chart and docker-compose (one environment for both
                 processes) and for tests that run an API and a worker against the same services

create_app() builds ApiSettings(), a worker WorkerSettings(); either also accepts a Settings.
tests/test_settings.py checks that every field is read by the process it belongs to.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from m4v_core.models import WebhookEvent


class _M4V(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="M4V_", env_file=None, extra="ignore")


class CommonSettings(_M4V):
    # --- queue and state ---
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for rq queues, job records, events")
    key_prefix: str = Field("m4v", description="prefix of every Redis key this service writes")
    job_ttl_s: int = Field(7 * 24 * 3600, description="how long finished job records and events are kept")
    events_maxlen: int = Field(5000, description="events kept per job stream (SSE replay window)")
    preset: str = Field("tiny", description="model preset served: tiny, m4v-768p, attn-768p")

    # --- storage (S3-compatible) ---
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL; None = AWS (or embedded in `m4v up`)")
    s3_public_endpoint: str | None = Field(
        None, description="endpoint in presigned URLs given to clients (default: s3_endpoint)"
    )
    s3_bucket: str = Field("m4v-videos", description="bucket for videos, thumbnails, metadata")
    s3_region: str = Field("us-east-1", description="S3 region for SigV4")
    s3_access_key: SecretStr | None = Field(None, description="S3 access key id")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret access key")
    presign_expiry_s: int = Field(3600, ge=1, le=7 * 24 * 3600, description="lifetime of presigned GET URLs")

    # --- webhooks ---
    webhook_secret: SecretStr | None = Field(
        None,
        description="whsec_<base64>: signs open-mode jobs; each API key's secret derives from it"
        " (`m4v keys webhook-secret`); unset: no webhook is sent (recorded as refused)",
    )
    webhook_secret_previous: SecretStr | None = Field(
        None,
        description="the secret being rotated out: webhooks carry a signature from each while both are set",
    )
    webhook_key_secrets: dict[str, SecretStr] = Field(
        {}, description="JSON {key id: whsec_...}: configured signing secrets instead of the derived ones"
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="per connect, read or write of an attempt")
    webhook_attempt_deadline_s: float = Field(
        15.0,
        gt=0,
        lt=60,
        description="whole delivery attempt (connect to answer); below the 60 s claim lease",
    )
    webhook_retry_delays_s: list[float] = Field(
        [5, 30, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 43200],
        description="backoff before each retry of a retried event (13 tries over ~40 h, >= 24 h with jitter)",
    )
    webhook_retry_events: list[WebhookEvent] = Field(
        ["completed", "failed", "canceled"], description="events retried; the others are sent once"
    )
    webhook_progress_interval_s: float = Field(
        10.0, ge=0, description="at most one progress webhook per job this often (0: no throttle)"
    )
    webhook_allow_hosts: list[str] = Field([], description="hosts allowed even if private/loopback")

    # --- logging ---
    log_level: str = Field("INFO", description="logging level")
    log_json: bool = Field(True, description="structured JSON logs")


class ApiSettings(CommonSettings):
    # --- queue ---
    max_queue_depth: int = Field(1000, description="queued jobs over all priorities before POST answers 503")
    fleet_view_ttl_s: float = Field(
        1.0,
        ge=0,
        description="API: reuse its view of workers and queued FLOPs (admission, ETAs) this long; 0 = off",
    )

    # --- HTTP ---
    api_host: str = Field("127.0.0.1", description="bind address of `m4v api`")
    api_port: int = Field(8000, description="port of `m4v api`")
    public_url: str | None = Field(None, description="base URL used in status_url/events_url links")
    playground: bool = Field(
        True,
        description="serve the browser playground at /playground/ (GET / redirects there); off in production",
    )
    cors_origins: list[str] = Field(
        [],
        description='origins allowed to call the API from browsers (CORS), e.g. ["https://app.example"]; '
        "[] = no CORS headers",
    )

    # --- API security and limits (service/auth.py, keys_file.py, ratelimit.py, limits.py) ---
    auth_mode: Literal["keys", "open"] = Field(
        "keys", description="keys: Bearer API keys required; open: no auth (`m4v up` default; logs a WARNING)"
    )
    api_keys: list[SecretStr] = Field(
        [], description='JSON list of "<key id>:<sha256 hex of the key>"; `m4v keys create` makes one'
    )
    api_keys_file: str | None = Field(
        None,
        description="file of such entries, one per line (# comments); the API re-reads it when it changes, "
        "no restart; adds to api_keys",
    )
    api_keys_reload_s: float = Field(
        5.0, ge=0, description="API: look at api_keys_file (one stat) at most this often; 0 = every request"
    )
    rate_limit_requests: int = Field(
        600,
        ge=0,
        description="requests per key per rate_limit_window_s (open mode: per client IP), also the burst: "
        "that many at once, then one every window/requests seconds (GCRA in Redis); 0 = off",
    )
    rate_limit_window_s: int = Field(
        60, ge=1, description="rate-limit period, seconds: the burst refills evenly over it (no fixed window)"
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="request bodies above this answer 413")
    max_prompt_chars: int = Field(
        2000, ge=1, le=2000, description="prompt and negative_prompt length limit (at most the schema's 2000)"
    )

    metrics_token: SecretStr | None = Field(
        None, description="if set, GET /metrics requires 'Authorization: Bearer <token>' (401 otherwise)"
    )

    # --- event streams (service/stream_slots.py, event_stream.py) ---
    sse_max_streams: int = Field(
        500, ge=1, description="open event streams per API process (503 above); its Redis pool's size"
    )
    sse_max_streams_per_key: int = Field(
        20, ge=1, description="open event streams per API key and process (429 above); open mode: none"
    )
    sse_idle_timeout_s: float = Field(
        600.0, gt=0, description="an event stream with no event this long is closed (clients reconnect)"
    )

    # --- per-key limits (service/quota.py); open mode has none ---
    key_max_jobs: int = Field(
        100, ge=0, description="jobs one API key may have queued or running at once (429 above); 0 = no limit"
    )
    key_max_flops: float | None = Field(
        None,
        ge=0,
        description="FLOPs one API key may have in flight (queued or running; its compute cap, 429 above); "
        "None = 20 default-sized jobs of the served preset, 0 = no cap",
    )

    # --- admission (service/admission.py) ---
    admission_max_flops: float | None = Field(
        None, gt=0, description="refuse (422) requests whose estimated FLOPs exceed this; None = no cap"
    )
    admission_gpu_memory_bytes: int | None = Field(
        None, gt=0, description="device memory assumed when no worker publishes one (CPU, scaled to zero)"
    )


class ModelSettings(_M4V):
    """The worker's model section: which weights, where, and how to run them."""

    weights: str | None = Field(
        None,
        description="checkpoint dir/file, s3:// URL, or an unconverted PyramidFlow-miniFLUX folder "
        "(converted at load; also supplies the T5/CLIP encoders); tiny: packaged weights",
    )
    allow_random_weights: bool = Field(
        False,
        description="benchmarks only: a non-tiny preset without weights starts with random weights (ERROR "
        "banner, shown in /workers) instead of refusing to start",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="worker device; auto = CUDA if present"
    )
    scan_backend: Literal["auto", "kernel", "ref"] = Field(
        "auto", description="Mamba2 scan: kernels or PyTorch"
    )
    context_cache: bool = Field(True, description="reuse text/history context within a (unit, stage)")
    parallel: Literal["none", "cfg"] = Field(
        "none",
        description="one job on several devices. cfg: the cond and uncond halves of every step on two "
        "devices (this process on the first, a follower process on the second; CUDA needs 2 visible GPUs, "
        "chart worker.gpu.count: 2). Same video as one device (proven on CPU processes); the speed-up on "
        "GPUs is not measured yet, so off by default (docs/PARALLEL.md)",
    )
    t5_path: str | None = Field(
        None,
        description="local T5 encoder: transformers dir with its tokenizer, or a diffusers/PyramidFlow "
        "folder (text_encoder_2/ + tokenizer_2/); overrides the weights folder's",
    )
    clip_path: str | None = Field(
        None,
        description="local CLIP text model: transformers dir with its tokenizer, or a diffusers/PyramidFlow "
        "folder (text_encoder/ + tokenizer/); overrides the weights folder's",
    )
    text_stand_in: bool = Field(False, description="benchmarks only: random text embeddings, no T5/CLIP")
    # speed options (model/runtime.py RuntimeOptions; defaults = reference behaviour, see docs/PERF_NOTES.md)
    attention_backend: Literal["sdpa_mask", "flex", "sdpa_split"] = Field(
        "sdpa_mask", description="joint attention: dense mask, FlexAttention, or split/packed SDPA"
    )
    compile_blocks: bool = Field(False, description="torch.compile every network block")
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = Field("default", description="mode")
    cuda_graphs: bool | Literal["auto"] = Field(
        "auto",
        description="cached step as a CUDA graph per (unit, stage); auto = on for bf16 M4V presets",
    )
    vae_tile_batch: int = Field(1, ge=1, description="spatial VAE tiles decoded in one batch")
    vae_tile_px: int | None = Field(
        None, ge=8, description="VAE decode tile size in pixels; unset = the VAE's own (768p: 256 px)"
    )
    vae_frame_chunk: int | None = Field(
        None,
        ge=1,
        description="VAE decode: at most this many frames per decoder block call (same frames, less "
        "activation memory, so a larger M4V_VAE_TILE_PX fits); unset = a latent frame's frames at once; "
        "not yet measured on a GPU",
    )
    overlap_decode: bool | Literal["auto"] = Field(
        "auto",
        description="decode unit k on a side thread and CUDA stream while unit k+1 samples; auto = on CUDA",
    )
    graph_lean_capture: bool = Field(
        True, description="one warm-up step per CUDA-graph capture, its output reused (off: two, discarded)"
    )
    graph_fixed_shapes: bool = Field(
        False,
        description="cached-step caches padded to fixed shapes: one CUDA graph per (stage, context bucket), "
        "replayed across units instead of captured per (unit, stage); sdpa_mask only; "
        "not yet measured on a GPU",
    )
    graph_context_bucket: int = Field(
        1024,
        ge=1,
        description="context capacity step in tokens for fixed shapes (larger: fewer captures, more padding)",
    )
    graph_max_tokens: int | None = Field(
        None,
        ge=1,
        description="CUDA graphs only for cached steps of at most this many current-frame tokens "
        "(768p stages: 240, 960, 3840); unset = every step; not yet measured on a GPU",
    )


class WorkerSettings(CommonSettings, ModelSettings):
    # --- storage ---
    s3_create_bucket: bool = Field(True, description="create the bucket at worker start if missing")
    multipart_threshold_bytes: int = Field(8 * 1024 * 1024, description="multipart upload above this size")
    s3_upload_attempts: int = Field(5, ge=1, description="tries per S3 upload before upload_failed")
    s3_retry_base_s: float = Field(0.5, ge=0, description="first backoff between S3 upload tries (doubles)")
    s3_retry_max_s: float = Field(8.0, ge=0, description="longest backoff between S3 upload tries")
    spool_dir: str | None = Field(
        None, description="where videos that could not be uploaded are kept; default <tmp>/m4v-spool"
    )
    spool_retry_s: float = Field(60.0, gt=0, description="how often a worker retries spooled uploads")
    drain_spool_flush_s: float = Field(
        60.0,
        ge=0,
        description="on SIGTERM, after the job stopped: seconds to upload the spool before exit; 0 = none",
    )

    # --- worker ---
    worker_name: str | None = Field(None, description="unique worker name; default host:pid")
    worker_metrics_port: int = Field(9100, description="Prometheus port of the worker; 0 = off")
    worker_metrics_host: str = Field(
        "127.0.0.1",
        description="address the worker's metrics listen on (the chart: the pod IP; never 0.0.0.0)",
    )
    heartbeat_s: float = Field(5.0, description="worker heartbeat period")
    max_attempts: int = Field(3, description="runs of a job (drains count) before a lost job is failed")
    job_lease_s: int = Field(
        30, ge=2, description="rq started-job lease, renewed every heartbeat_s; lapsed = abandoned job"
    )
    reaper_interval_s: float = Field(10.0, gt=0, description="how often a worker looks for abandoned jobs")
    drain_finish_fraction: float = Field(
        0.9, ge=0, le=1, description="on SIGTERM, finish a job this far along; requeue it otherwise"
    )
    torch_threads: int = Field(0, ge=0, description="torch CPU threads of a worker; 0 = torch's default")
    previews: bool = Field(True, description="stream each finished unit as an HLS segment + preview event")


class Settings(ApiSettings, WorkerSettings):
    """Every setting of both processes (`m4v up`, the chart, docker-compose, tests)."""
