"""Issue 16, the chart: Redis requires a password that the api, the workers and KEDA use; NetworkPolicies let
only the api and the workers reach Redis; both pods run with a read-only root filesystem; worker metrics
listen on the pod IP; proxy headers are trusted from no one by default; /metrics can require a token."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.deploy.chart_render import VARIANTS, Rendered, container, labels, render

COMPONENTS = ("api", "worker")


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


def env(c: dict[str, Any]) -> list[dict[str, Any]]:
    return list(c.get("env", []))


def secret_data(rendered: Rendered) -> dict[str, str]:
    (secret,) = rendered.kind("Secret")
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_api_and_worker_run_with_a_read_only_root_filesystem(variant: str) -> None:
    rendered = render(VARIANTS[variant])
    for component in COMPONENTS:
        c = container(rendered.one("Deployment", component), component)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, (variant, component)
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}
    worker = container(rendered.one("Deployment", "worker"), "worker")
    values = {e["name"]: e.get("value") for e in env(worker)}
    assert values["HOME"] == "/tmp" and values["TRITON_CACHE_DIR"].startswith("/cache/")


def test_the_in_chart_redis_requires_a_password_that_api_and_workers_use(default: Rendered) -> None:
    redis = container(default.one("StatefulSet", "redis"), "redis")
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert {e["name"] for e in env(redis)} == {"REDIS_PASSWORD", "REDISCLI_AUTH"}  # the probe's redis-cli
    password = secret_data(default)["REDIS_PASSWORD"]
    assert len(password) >= 32 and password.isalnum()
    for component in COMPONENTS:
        names = [e["name"] for e in env(container(default.one("Deployment", component), component))]
        entries = env(container(default.one("Deployment", component), component))
        url = next(e for e in entries if e["name"] == "M4V_REDIS_URL")["value"]
        assert url.startswith("redis://:$(REDIS_PASSWORD)@")
        # Kubernetes expands $(VAR) only from variables defined before it
        assert names.index("REDIS_PASSWORD") < names.index("M4V_REDIS_URL")
        ref = next(e for e in entries if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "REDIS_PASSWORD"


def test_a_given_redis_password_is_used_and_auth_can_be_turned_off() -> None:
    assert secret_data(render({"secrets": {"redisPassword": "s3cret-pw"}}))["REDIS_PASSWORD"] == "s3cret-pw"
    off = render({"redis": {"internal": {"auth": {"enabled": False}}}})
    assert "--requirepass" not in container(off.one("StatefulSet", "redis"), "redis")["args"]
    assert "REDIS_PASSWORD" not in secret_data(off)


def test_keda_authenticates_to_the_in_chart_redis() -> None:
    rendered = render({"keda": {"enabled": True}})
    (auth,) = rendered.kind("TriggerAuthentication")
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["key"]) == ("password", "REDIS_PASSWORD")
    (scaled,) = rendered.kind("ScaledObject")
    redis_triggers = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    assert redis_triggers and all(
        t["authenticationRef"]["name"] == auth["metadata"]["name"] for t in redis_triggers
    )


def test_network_policies_let_only_api_and_workers_reach_redis(default: Rendered) -> None:
    policies = {labels(p)["app.kubernetes.io/component"]: p for p in default.kind("NetworkPolicy")}
    assert set(policies) == {"redis", "api", "worker"}
    redis = policies["redis"]["spec"]
    assert redis["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert redis["policyTypes"] == ["Ingress"]
    (rule,) = redis["ingress"]
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]}
    assert allowed == {"api", "worker"} and len(rule["from"]) == 2  # no namespace-wide or ipBlock peer
    assert [p["port"] for p in rule["ports"]] == [6379]
    (worker_rule,) = policies["worker"]["spec"]["ingress"]  # only metrics scrapes reach a worker
    assert [p["port"] for p in worker_rule["ports"]] == [9100]

    keda_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    extra = render({"networkPolicy": {"redisExtraFrom": [keda_peer]}})
    (redis_policy,) = [
        p for p in extra.kind("NetworkPolicy") if labels(p)["app.kubernetes.io/component"] == "redis"
    ]
    assert keda_peer in redis_policy["spec"]["ingress"][0]["from"]
    assert render({"networkPolicy": {"enabled": False}}).kind("NetworkPolicy") == []


def test_worker_metrics_listen_on_the_pod_ip(default: Rendered) -> None:
    entries = env(container(default.one("Deployment", "worker"), "worker"))
    host = next(e for e in entries if e["name"] == "M4V_WORKER_METRICS_HOST")
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_proxy_headers_are_trusted_from_no_one_by_default(default: Rendered) -> None:
    args = container(default.one("Deployment", "api"), "api")["args"]
    assert args[args.index("--forwarded-allow-ips") + 1] == "127.0.0.1"


def test_metrics_token_goes_to_the_api_and_the_service_monitor() -> None:
    rendered = render({"secrets": {"metricsToken": "scrape-me"}, "serviceMonitor": {"enabled": True}})
    assert secret_data(rendered)["M4V_METRICS_TOKEN"] == "scrape-me"
    names = {e["name"] for e in env(container(rendered.one("Deployment", "api"), "api"))}
    assert "M4V_METRICS_TOKEN" in names
    monitor = rendered.one("ServiceMonitor", "api")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"]["key"] == "M4V_METRICS_TOKEN"
