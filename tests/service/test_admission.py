"""Admission by estimated FLOPs and GPU memory, queued-job ETAs and m4v_queue_flops: the API against real
Redis; worker heartbeats and throughput are written to Redis exactly as workers write them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from m4v_core import JobStore, Settings
from m4v_core.keys import Keys
from m4v_core.throughput import ThroughputMeter, job_flops
from model.memory import estimate_peak_memory
from service.app import create_app
from tests.service.conftest import assert_error_shape, submit
from tests.service.fleet_helpers import TINY, publish_worker, tiny_flops


def tiny_peak(num_frames: int, cfg_batch: int = 2) -> int:
    return estimate_peak_memory(TINY, width=128, height=128, num_frames=num_frames, cfg_batch=cfg_batch).total


def test_request_above_the_flop_cap_is_refused_with_422_naming_the_limit(settings: Settings) -> None:
    cap = (tiny_flops(9) + tiny_flops(17)) / 2
    with TestClient(create_app(settings.model_copy(update={"admission_max_flops": cap}))) as c:
        err = assert_error_shape(
            c.post("/generate", json={"prompt": "x", "num_frames": 17}), 422, "exceeds_flop_limit"
        )
        assert "M4V_ADMISSION_MAX_FLOPS" in err["message"]
        assert err["details"]["limit_value"] == cap and err["details"]["estimate"] > cap
        assert c.post("/generate", json={"prompt": "x", "num_frames": 9}).status_code == 202


def test_request_above_the_largest_worker_gpu_is_refused_with_413(
    client: TestClient, store: JobStore
) -> None:
    publish_worker(store, "small", device_memory_bytes=tiny_peak(9) + 1)
    err = assert_error_shape(
        client.post("/generate", json={"prompt": "x", "num_frames": 33}), 413, "exceeds_gpu_memory"
    )
    assert "largest worker GPU" in err["message"] and "GiB" in err["message"]
    assert err["details"]["estimate"] == tiny_peak(33)
    assert client.post("/generate", json={"prompt": "x", "num_frames": 9}).status_code == 202
    publish_worker(store, "big", device_memory_bytes=80 << 30)  # one worker that can hold it is enough
    assert client.post("/generate", json={"prompt": "x", "num_frames": 33}).status_code == 202


def test_a_cfg_pair_admits_per_gpu_what_one_gpu_of_the_same_size_refuses(
    client: TestClient, store: JobStore
) -> None:
    """On a 2-GPU worker each GPU holds one CFG half's cache and activations (model/memory.py cfg_batch 1)."""
    pair_peak, one_peak = tiny_peak(33, cfg_batch=1), tiny_peak(33)
    assert pair_peak < one_peak
    card = (pair_peak + one_peak) // 2  # holds 33 frames as one half, not as the whole CFG batch
    publish_worker(store, "one", device_memory_bytes=card, gpu_count=1)
    err = assert_error_shape(
        client.post("/generate", json={"prompt": "x", "num_frames": 33}), 413, "exceeds_gpu_memory"
    )
    assert err["details"]["estimate"] == one_peak and err["details"]["gpu_count"] == 1
    publish_worker(store, "pair", device_memory_bytes=card, gpu_count=2)
    assert client.post("/generate", json={"prompt": "x", "num_frames": 33}).status_code == 202


def test_a_request_too_large_for_a_cfg_pair_names_the_memory_per_gpu(
    client: TestClient, store: JobStore
) -> None:
    publish_worker(store, "pair", device_memory_bytes=tiny_peak(9, cfg_batch=1), gpu_count=2)
    err = assert_error_shape(
        client.post("/generate", json={"prompt": "x", "num_frames": 33}), 413, "exceeds_gpu_memory"
    )
    assert "per GPU" in err["message"] and "2-GPU worker" in err["message"]
    assert err["details"]["estimate"] == tiny_peak(33, cfg_batch=1) and err["details"]["gpu_count"] == 2


def test_memory_cap_setting_applies_when_no_worker_publishes_memory(settings: Settings) -> None:
    limit = tiny_peak(1) - 1
    with TestClient(create_app(settings.model_copy(update={"admission_gpu_memory_bytes": limit}))) as c:
        err = assert_error_shape(c.post("/generate", json={"prompt": "x"}), 413, "exceeds_gpu_memory")
        assert "M4V_ADMISSION_GPU_MEMORY_BYTES" in err["message"]


def test_queued_jobs_get_an_eta_from_the_flops_ahead_and_the_fleet_rate(
    client: TestClient, store: JobStore
) -> None:
    assert submit(client, num_frames=9)["eta_s"] is None  # nothing measured yet
    meter = ThroughputMeter.load(store.r, store.keys.prefix, "tiny")
    meter.add(1e9, 1.0)  # 1 GFLOP/s measured for the preset
    publish_worker(store, "w1", flops_per_s=2e9)
    publish_worker(store, "w2", flops_per_s=3e9)  # fleet: 5 GFLOP/s
    second = submit(client, num_frames=17)
    high = submit(client, num_frames=1, priority="high")
    eta_high = client.get(f"/jobs/{high['id']}").json()["eta_s"]
    eta_second = client.get(f"/jobs/{second['id']}").json()["eta_s"]
    assert eta_high == pytest.approx(tiny_flops(1) / 5e9, rel=1e-3)
    assert eta_second == pytest.approx((tiny_flops(1) + tiny_flops(9) + tiny_flops(17)) / 5e9, rel=1e-3)


def test_queued_etas_use_the_rate_measured_on_workers_of_each_gpu_count(
    client: TestClient, store: JobStore
) -> None:
    """Workers that have not measured a rate themselves count with their GPU count's: one-GPU workers
    at 1 GFLOP/s and a CFG pair at 1.8 GFLOP/s make 2.8, not 3 x the blend of both."""
    ThroughputMeter.load(store.r, store.keys.prefix, "tiny", gpu_count=1).add(1e9, 1.0)
    ThroughputMeter.load(store.r, store.keys.prefix, "tiny", gpu_count=2).add(1.8e9, 1.0)
    publish_worker(store, "one", gpu_count=1)
    publish_worker(store, "pair", gpu_count=2)
    assert submit(client, num_frames=9)["eta_s"] == pytest.approx(tiny_flops(9) / 2.8e9, rel=1e-3)
    publish_worker(store, "cpu", gpu_count=0)  # a CPU worker (or one from before gpu_count) counts as one GPU
    high = submit(client, num_frames=1, priority="high")
    assert high["eta_s"] == pytest.approx(tiny_flops(1) / 3.8e9, rel=1e-3)


def test_queue_flops_metric_sums_the_queued_estimates(client: TestClient, store: JobStore) -> None:
    submit(client, num_frames=9)
    submit(client, num_frames=17, priority="low")
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("m4v_queue_flops "))
    assert float(line.split()[1]) == pytest.approx(tiny_flops(9) + tiny_flops(17), rel=1e-6)
    ids = [i.decode() for i in store.r.lrange(Keys(store.keys.prefix).rq_queue("low"), 0, -1)]
    assert job_flops(store.r, store.keys.prefix, ids) == [pytest.approx(tiny_flops(17))]


def test_the_memory_estimate_follows_the_decode_tile_size_a_worker_publishes(
    client: TestClient, store: JobStore
) -> None:
    """The decode tile size (M4V_VAE_TILE_PX, in the worker's heartbeat) sets the decoder's working set and
    streaming caches: a card between the two estimates holds the request on a worker that decodes the tiny
    preset's 128 px frames in 32 px tiles, not on one that decodes them whole (the VAE's own tiles)."""
    whole = tiny_peak(33)
    tiled = estimate_peak_memory(TINY, width=128, height=128, num_frames=33, vae_tile_px=32).total
    assert tiled < whole
    card = (tiled + whole) // 2
    publish_worker(store, "w", device_memory_bytes=card, vae_tile_px=32)
    assert client.post("/generate", json={"prompt": "x", "num_frames": 33}).status_code == 202
    publish_worker(store, "w", device_memory_bytes=card)
    err = assert_error_shape(
        client.post("/generate", json={"prompt": "x", "num_frames": 33}), 413, "exceeds_gpu_memory"
    )
    assert err["details"]["estimate"] == whole
