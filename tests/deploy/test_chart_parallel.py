"""The chart's side of M4V_PARALLEL: settings.parallel reaches the worker's environment, cfg asks for two
GPUs per worker pod, and cfg with fewer is refused at render."""

from __future__ import annotations

import pytest

from m4v_core import Settings
from tests.deploy.chart_render import container, render

helm = pytest.importorskip("helm_python")


def test_default_is_one_device_per_job() -> None:
    data = render().one("ConfigMap", "config")["data"]
    assert data["M4V_PARALLEL"] == "none"


def test_cfg_with_two_gpus_sets_the_env_and_requests_both(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render({"settings": {"parallel": "cfg"}, "worker": {"gpu": {"count": 2}}})
    data = rendered.one("ConfigMap", "config")["data"]
    monkeypatch.setenv("M4V_PARALLEL", data["M4V_PARALLEL"])
    assert Settings().parallel == "cfg"  # type: ignore[call-arg]
    worker = container(rendered.one("Deployment", "worker"), "worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 2


@pytest.mark.parametrize("count", [0, 1])
def test_cfg_with_fewer_than_two_gpus_fails_at_render(count: int) -> None:
    with pytest.raises(helm.HelmError, match="worker.gpu.count to 2"):
        render({"settings": {"parallel": "cfg"}, "worker": {"gpu": {"count": count}}})


def test_unknown_mode_fails_the_schema() -> None:
    with pytest.raises(helm.HelmError, match="parallel"):
        render({"settings": {"parallel": "ring"}})
