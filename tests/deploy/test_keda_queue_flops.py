"""The chart's optional KEDA prometheus trigger on m4v_queue_flops (keda.prometheus.*), rendered with Helm."""

from __future__ import annotations

from tests.deploy.chart_render import VARIANTS, render


def _triggers(values: dict) -> list[dict]:  # type: ignore[type-arg]
    return render(values).one("ScaledObject", "worker")["spec"]["triggers"]  # type: ignore[no-any-return]


def test_queue_flops_trigger_is_off_by_default() -> None:
    assert all(t["type"] == "redis" for t in _triggers({"keda": {"enabled": True}}))


def test_queue_flops_trigger_scales_on_the_api_metric_per_namespace() -> None:
    triggers = _triggers(VARIANTS["keda-prometheus"])
    flops = [t for t in triggers if t["type"] == "prometheus"]
    assert len(flops) == 1 and len(triggers) == 5  # the three queues and the running jobs stay
    meta = flops[0]["metadata"]
    assert meta["query"] == 'max(m4v_queue_flops{namespace="m4v"})'
    assert meta["serverAddress"] == "http://prometheus.monitoring.svc:9090"
    assert (meta["threshold"], meta["activationThreshold"]) == ("5e15", "1e12")
    assert "authenticationRef" not in flops[0]


def test_queue_flops_trigger_takes_a_custom_query_and_auth() -> None:
    values = {
        "keda": {
            "enabled": True,
            "prometheus": {"enabled": True, "query": "sum(m4v_queue_flops)", "authenticationRef": "prom"},
        }
    }
    flops = next(t for t in _triggers(values) if t["type"] == "prometheus")
    assert flops["metadata"]["query"] == "sum(m4v_queue_flops)"
    assert flops["authenticationRef"] == {"name": "prom"}
