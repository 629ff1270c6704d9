"""The Grafana dashboard and the alert rules: every expression names a metric that a live API and a live
worker export after one job; the rules pass `promtool check rules` and fire on the series they describe
(`promtool test rules`); the chart renders both only when asked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from m4v_cli.seaweed import SeaweedS3, free_port
from service.app import create_app
from tests.deploy.chart_render import CHART, VARIANTS, render
from tests.webhook_receiver import Receiver
from tests.worker.jobs_helpers import FAST_STEPS, make_settings
from worker.main import run_burst
from worker.metrics import WorkerMetrics

DASHBOARD = CHART / "dashboards" / "m4v-serve.json"
ALERTS = {
    "M4VNoReadyWorker",
    "M4VQueueTooOld",
    "M4VJobFailureRatio",
    "M4VWebhookFailureRatio",
    "M4VWorkerHeartbeatMissing",
}
# What the issue asks the dashboard to show, as the series that carry it.
DASHBOARD_MUST_SHOW = {
    "m4v_queue_depth",
    "m4v_queue_oldest_age_seconds",
    "m4v_jobs_total",
    "m4v_eta_relative_error_bucket",
    "m4v_job_phase_seconds_bucket",
    "m4v_sampler_step_seconds_bucket",
    "m4v_achieved_tflops",
    "m4v_gpu_memory_peak_bytes",
    "m4v_webhook_deliveries_total",
    "m4v_http_requests_total",
    "m4v_http_request_duration_seconds_bucket",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
PROMQL_FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "time"}


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression (label matchers, ranges, grouping clauses and strings removed);
    fails on a function outside PROMQL_FUNCTIONS, so a new one is looked at, not taken for a metric."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", e)
    names = set()
    for word, call in re.findall(r"([A-Za-z_:][\w:]*)\s*(\(?)", e):
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown function {word} in {expr!r}"
        elif word not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def dashboard_expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":  # label_values(<metric>, label)
            exprs.append(re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", var["definition"]))
    return exprs


def rules_doc() -> dict[str, Any]:
    rule = render(VARIANTS["observability"]).kind("PrometheusRule")
    assert len(rule) == 1
    return rule[0]["spec"]  # type: ignore[no-any-return]


def rule_expressions() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in rules_doc()["groups"] for r in g["rules"]}


def test_expression_parser_finds_metrics_and_only_metrics() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(m4v_x_bucket{a="b", c!="{d}"}[5m]))) > 1e3'
    assert metric_names(expr) == {"m4v_x_bucket"}
    assert metric_names("time() - up > 30 and on() max(m4v_y) == 0") == {"up", "m4v_y"}


# --- live metrics after one job ---


@pytest.fixture(scope="module")
def exported(
    redis_url: str, s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[set[str]]:
    """Sample names on GET /metrics of the API and of a worker's metrics server after one job that sent a
    webhook (the first attempt fails, so `retrying` and `delivered` are both counted)."""
    prefix = f"m4vtestobs{uuid.uuid4().hex[:8]}"
    bucket = f"m4v-obs-{uuid.uuid4().hex[:8]}"  # the worker creates it (s3_create_bucket)
    receiver = Receiver(codes=[500])
    settings = make_settings(redis_url, prefix, s3_server, bucket)
    from model.pipeline import VideoPipeline

    pipeline = VideoPipeline.from_preset("tiny", device="cpu")
    metrics = WorkerMetrics()
    port = free_port()
    server, _ = metrics.serve(port, addr="127.0.0.1")
    try:
        with TestClient(create_app(settings)) as api:
            body = {"prompt": "a dashboard", "webhook_url": receiver.url, "webhook_events": ["completed"]}
            job = api.post("/generate", json={**body, **FAST_STEPS}).json()
            run_burst(settings, pipeline=pipeline, metrics=metrics, drain_webhooks_s=15.0)
            assert api.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
            api_text = api.get("/metrics").text
        worker_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        receiver.close()
        client = redis.Redis.from_url(redis_url)
        for pattern in (f"{prefix}:*", f"rq:*{prefix}*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)
    names = set()
    for text in (api_text, worker_text):
        for family in text_string_to_metric_families(text):
            names |= {s.name for s in family.samples}
    yield names


@pytest.mark.slow
def test_every_dashboard_and_rule_expression_names_an_exported_metric(exported: set[str]) -> None:
    exprs = dashboard_expressions() + list(rule_expressions().values())
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"{expr!r} names {sorted(missing)}, which neither the API nor a worker exports"
        used |= names
    dashboard_metrics = set().union(*(metric_names(e) for e in dashboard_expressions()))
    assert dashboard_metrics >= DASHBOARD_MUST_SHOW, DASHBOARD_MUST_SHOW - dashboard_metrics
    assert set(rule_expressions()) == ALERTS


# --- promtool (Debian package prometheus) ---


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run installs it)")
    return found


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rules_doc()))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


# Synthetic series (promtool's notation: start+step x count) and the alerts they must raise, or not.
RULE_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'm4v_queue_depth{namespace="m4v", priority="normal", pod="api-0"}'
        values: '3x40'
      - series: 'm4v_queue_depth{namespace="m4v", priority="normal", pod="api-1"}'
        values: '3x40'
      - series: 'm4v_workers{namespace="m4v", state="ready", pod="api-0"}'
        values: '0x40'
      - series: 'm4v_queue_oldest_age_seconds{namespace="m4v", pod="api-0"}'
        values: '0+60x40'
      - series: 'm4v_jobs_total{namespace="m4v", status="succeeded", pod="w-0"}'
        values: '0+8x40'
      - series: 'm4v_jobs_total{namespace="m4v", status="failed", pod="w-0"}'
        values: '0+2x40'
      - series: 'm4v_webhook_deliveries_total{namespace="m4v", outcome="delivered", pod="w-0"}'
        values: '0+10x40'
      - series: 'm4v_webhook_deliveries_total{namespace="m4v", outcome="retrying", pod="w-0"}'
        values: '0+1x40'
      - series: 'm4v_worker_heartbeat_timestamp_seconds{namespace="m4v", pod="w-0"}'
        values: '0+60x10 600x30'
      - series: 'm4v_worker_heartbeat_timestamp_seconds{namespace="m4v", pod="w-1"}'
        values: '0+60x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: M4VNoReadyWorker
        exp_alerts: []
      - eval_time: 20m
        alertname: M4VNoReadyWorker
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: Jobs are queued in m4v and no worker is ready
              description: >-
                3 or more jobs wait and no worker heartbeat says its model is loaded (scaled to zero and
                not waking up, or every worker crashed or stuck loading).
      - eval_time: 38m
        alertname: M4VQueueTooOld
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: The oldest queued job in m4v has waited over 1800 s
              description: The oldest queued job is 38m 0s old; the fleet cannot keep up with the queue.
      - eval_time: 40m
        alertname: M4VJobFailureRatio
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: Over 0.1 of finished jobs failed or timed out in m4v
              description: 20% of the jobs finished in the last 30m failed or timed out.
      - eval_time: 40m
        alertname: M4VWebhookFailureRatio
        exp_alerts: []
      - eval_time: 20m
        alertname: M4VWorkerHeartbeatMissing
        exp_alerts:
          - exp_labels: {severity: warning, namespace: m4v, pod: w-0}
            exp_annotations:
              summary: Worker w-0 has written no heartbeat for over 30 s
              description: >-
                The worker process answers its metrics scrape but its last heartbeat in Redis is 10m 0s old,
                so the API no longer counts it (Redis unreachable from it, or its heartbeat thread stopped).
"""


def test_rules_fire_on_the_series_they_describe(tmp_path: Path) -> None:
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_doc()))
    (tmp_path / "tests.yaml").write_text(RULE_TESTS)
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the chart ---


def test_chart_renders_the_dashboard_and_the_rules_only_when_enabled() -> None:
    default = render({})
    assert not default.kind("PrometheusRule")
    assert not [d for d in default.kind("ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    config = next(d for d in default.kind("ConfigMap") if d["metadata"]["name"].endswith("-config"))
    assert config["data"]["M4V_PLAYGROUND"] == "false"  # production default: no playground

    rendered = render(VARIANTS["observability"])
    dashboards = [d for d in rendered.kind("ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")]
    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboards[0]["data"]["m4v-serve.json"]) == json.loads(DASHBOARD.read_text())
    rule = rendered.kind("PrometheusRule")[0]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(rule_expressions()) == ALERTS
    for expr in rule_expressions().values():
        assert 'namespace="m4v"' in expr  # scoped to the release's namespace
