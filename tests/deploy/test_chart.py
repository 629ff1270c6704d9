"""The Helm chart, rendered offline for the default values and every ci/*-values.yaml: valid Kubernetes,
clean YAML, and the behaviour the service needs (GPU only on workers, real probe paths, real settings)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from m4v_core import Settings
from tests.deploy.chart_render import (
    CHART,
    KUBE_VERSION,
    VARIANTS,
    Rendered,
    container,
    env_names,
    labels,
    pod_spec,
    render,
)

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
SECRET_FIELDS = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
# Variables the chart sets that are not M4V settings: none today; add here with the reason.
# REDIS_PASSWORD: what $(REDIS_PASSWORD) in M4V_REDIS_URL expands; HOME, TRITON_CACHE_DIR: the worker's
# writable places under a read-only root filesystem
NON_SETTINGS_ENV: set[str] = {"REDIS_PASSWORD", "HOME", "TRITON_CACHE_DIR"}
LONG_RELEASE = "a-very-long-release-name-for-testing-that-is-fifty-three"[:53]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    return request.param, render(VARIANTS[request.param])


def test_chart_lints_clean_in_strict_mode_for_every_variant() -> None:
    for name, values in VARIANTS.items():
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"{name}: {problems}"


def test_every_rendered_manifest_passes_strict_kubernetes_schema(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    validated = 0
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # no CRD schemas offline; their fields are asserted in the tests below
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        validated += 1
    assert validated >= 8, f"{name}: only {validated} manifests validated"


def test_rendered_yaml_passes_yamllint(variant: tuple[str, Rendered]) -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(
        "extends: default\nrules:\n  line-length: {max: 160}\n  document-start: disable\n"
        "  indentation: {spaces: 2, indent-sequences: whatever}\n  comments: {min-spaces-from-content: 1}\n"
    )
    name, rendered = variant
    for template, text in rendered.texts.items():
        if template.endswith(".txt") or not text.strip():
            continue
        problems = list(linter.run(text.strip() + "\n", config))  # helm trims each manifest the same way
        assert not problems, f"{name} {template}: {[str(p) for p in problems]}"


def test_worker_requests_a_gpu_and_the_api_does_not(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    worker = container(rendered.one("Deployment", "worker"), "worker")
    api = container(rendered.one("Deployment", "api"), "api")
    for kind in ("requests", "limits"):
        assert "nvidia.com/gpu" not in api["resources"].get(kind, {})
    gpus = VARIANTS[name].get("worker", {}).get("gpu", {}).get("count", 1)
    if gpus:
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == gpus
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == gpus
    else:
        assert "nvidia.com/gpu" not in worker["resources"]["requests"]


def test_every_env_var_the_chart_sets_is_a_settings_field(variant: tuple[str, Rendered]) -> None:
    _, rendered = variant
    fields = {f"M4V_{n.upper()}" for n in Settings.model_fields}
    for deployment in rendered.kind("Deployment"):
        if labels(deployment)["app.kubernetes.io/component"] not in ("api", "worker"):
            continue
        for c in pod_spec(deployment)["containers"]:
            unknown = env_names(rendered, c) - fields - NON_SETTINGS_ENV
            assert not unknown, f"{deployment['metadata']['name']}: not Settings fields: {unknown}"


def test_configmap_values_parse_as_settings(
    variant: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap is what the pods get as environment: Settings must accept every value in it."""
    _, rendered = variant
    data = rendered.one("ConfigMap", "config")["data"]
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # type: ignore[call-arg]  # fields from M4V_* env
    assert settings.key_prefix == data.get("M4V_KEY_PREFIX", "m4v")
    if "M4V_PRESIGN_EXPIRY_S" in data:
        assert settings.presign_expiry_s == int(data["M4V_PRESIGN_EXPIRY_S"])


def test_secret_values_never_reach_a_configmap() -> None:
    values = VARIANTS["external-redis"]
    rendered = render(values)
    planted = [values["secrets"][k] for k in ("s3AccessKey", "s3SecretKey", "webhookSecret")]
    planted.append(values["redis"]["url"])
    for cm in rendered.kind("ConfigMap"):
        text = yaml.safe_dump(cm)
        assert not [p for p in planted if p in text]
        assert not {k.removeprefix("M4V_").lower() for k in cm["data"]} & (SECRET_FIELDS | {"redis_url"})
    secret = {k: base64.b64decode(v).decode() for k, v in rendered.one("Secret", "secret")["data"].items()}
    assert secret["M4V_REDIS_URL"] == values["redis"]["url"]
    assert secret["M4V_S3_SECRET_KEY"] == values["secrets"]["s3SecretKey"]


def test_secret_placed_under_settings_is_refused_at_render() -> None:
    with pytest.raises(helm.HelmError, match="secret"):
        render({"settings": {"webhook_secret": "whsec_abc"}})


def test_existing_secret_replaces_the_chart_secret() -> None:
    rendered = render(VARIANTS["existing-secret"])
    assert not rendered.kind("Secret")
    worker = container(rendered.one("Deployment", "worker"), "worker")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in worker["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {r["name"] for r in refs.values()} == {"m4v-credentials"}
    assert refs["M4V_REDIS_URL"].get("optional") is not True  # no Redis, no service


def test_names_stay_within_63_chars_and_distinct_with_a_long_release_name() -> None:
    for name, values in VARIANTS.items():
        rendered = render(values, release=LONG_RELEASE)
        seen: set[tuple[str, str]] = set()
        for doc in rendered.docs:
            object_name = doc["metadata"]["name"]
            assert len(object_name) <= 63, f"{name}: {doc['kind']} {object_name}"
            assert (doc["kind"], object_name) not in seen, f"{name}: duplicate {doc['kind']} {object_name}"
            seen.add((doc["kind"], object_name))
            for value in labels(doc).values():
                assert len(value) <= 63


def test_worker_readiness_opens_only_after_the_model_is_loaded() -> None:
    worker_doc = render().one("Deployment", "worker")
    worker = container(worker_doc, "worker")
    for probe in ("startupProbe", "readinessProbe"):
        assert worker[probe]["exec"]["command"] == ["python", "/opt/m4v/probes/worker_ready.py"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["M4V_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert worker["livenessProbe"]["httpGet"]["port"] == "metrics"
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert int(env["M4V_WORKER_METRICS_PORT"]["value"]) == ports["metrics"]


def test_worker_drains_before_it_is_killed() -> None:
    worker_doc = render().one("Deployment", "worker")
    grace = pod_spec(worker_doc)["terminationGracePeriodSeconds"]
    assert grace >= 600  # a 768p job runs tens of minutes; rq's warm shutdown finishes it
    command = container(worker_doc, "worker")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "/opt/m4v/probes/worker_drain.py"]
    assert float(command[command.index("--timeout-s") + 1]) <= grace


def test_api_probes_and_port_exist_in_the_fastapi_app(redis_url: str, key_prefix: str) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    rendered = render()
    api = container(rendered.one("Deployment", "api"), "api")
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert api["args"][api["args"].index("--port") + 1] == str(ports["http"])
    service = rendered.one("Service", "api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    app = create_app(Settings(redis_url=redis_url, key_prefix=key_prefix))  # type: ignore[call-arg]
    with TestClient(app) as client:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = api[probe]["httpGet"]
            assert get["port"] == "http"
            assert client.get(get["path"]).status_code == 200, f"{probe} {get['path']}"


def test_servicemonitors_scrape_ports_that_exist() -> None:
    rendered = render(VARIANTS["servicemonitor"])
    for component in ("api", "worker"):
        monitor = rendered.one("ServiceMonitor", component)
        service = rendered.one("Service", component)
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def _scaled_object(values: dict[str, Any]) -> dict[str, Any]:
    return render(values).one("ScaledObject", "worker")


def test_keda_scales_workers_to_zero_on_every_rq_queue() -> None:
    values = VARIANTS["keda"]
    rendered = render(values)
    scaled = rendered.one("ScaledObject", "worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == rendered.one("Deployment", "worker")["metadata"]["name"]
    assert spec["minReplicaCount"] == 0
    assert "replicas" not in rendered.one("Deployment", "worker")["spec"]  # KEDA owns the count
    lists = sorted(t["metadata"]["listName"] for t in spec["triggers"])
    assert lists == ["m4v:active", "rq:queue:m4v-high", "rq:queue:m4v-low", "rq:queue:m4v-normal"]
    assert spec["advanced"]["scalingModifiers"]["activationTarget"] == "0"
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis"
        auth = trigger["authenticationRef"]["name"]
    assert rendered.one("TriggerAuthentication", "worker")["metadata"]["name"] == auth


def test_keda_list_names_are_the_queues_rq_fills(redis_url: str, key_prefix: str) -> None:
    """Enqueue into real rq queues named by the contract and read their lengths at the keys KEDA watches."""
    import redis
    from rq import Queue

    from m4v_core.keys import Keys

    spec = _scaled_object({"keda": {"enabled": True}, "settings": {"key_prefix": key_prefix}})["spec"]
    client = redis.Redis.from_url(redis_url)
    for i, queue_name in enumerate(Keys(key_prefix).queues()):
        for _ in range(i + 1):
            Queue(queue_name, connection=client).enqueue("builtins.print", "x")
    queues = [t for t in spec["triggers"] if t["name"].startswith("queue_")]
    assert sorted(client.llen(t["metadata"]["listName"]) for t in queues) == [1, 2, 3]


def test_external_redis_keeps_the_url_out_of_plain_env_and_points_keda_at_it() -> None:
    values = VARIANTS["external-redis"]
    rendered = render(values)
    assert not [d for d in rendered.docs if labels(d).get("app.kubernetes.io/component") == "redis"]
    for component in ("api", "worker"):
        env = {e["name"]: e for e in container(rendered.one("Deployment", component), component)["env"]}
        assert "value" not in env["M4V_REDIS_URL"]
        assert env["M4V_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "M4V_REDIS_URL"
    worker_env = {e["name"]: e for e in container(rendered.one("Deployment", "worker"), "worker")["env"]}
    assert worker_env["M4V_WEIGHTS"]["value"] == values["weights"]["s3Url"]
    for trigger in rendered.one("ScaledObject", "worker")["spec"]["triggers"]:
        assert trigger["metadata"]["address"] == values["keda"]["redis"]["address"]
        assert trigger["metadata"]["databaseIndex"] == "2"


def test_weights_from_a_pvc_are_mounted_read_only_where_m4v_weights_points() -> None:
    values = VARIANTS["existing-secret"]
    worker_doc = render(values).one("Deployment", "worker")
    worker = container(worker_doc, "worker")
    mount = next(m for m in worker["volumeMounts"] if m["name"] == "weights")
    volume = next(v for v in pod_spec(worker_doc)["volumes"] if v["name"] == "weights")
    assert mount["readOnly"] and volume["persistentVolumeClaim"]["claimName"] == "m4v-models"
    env = {e["name"]: e.get("value") for e in worker["env"]}
    for var in ("M4V_WEIGHTS", "M4V_T5_PATH", "M4V_CLIP_PATH"):
        assert env[var].startswith(mount["mountPath"] + "/")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"internal": {"enabled": False}}}, "redis"),
        ({"weights": {"s3Url": "https://x/y"}}, "s3://"),
        ({"weights": {"pvc": {"enabled": True}}}, "existingClaim"),
    ],
)
def test_wrong_combinations_fail_at_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_schema_settings_are_non_secret_settings_fields() -> None:
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
        defaults = chart.values
    assert schema is not None
    props = set(schema["properties"]["settings"]["properties"])
    assert props <= set(Settings.model_fields)
    assert not props & SECRET_FIELDS
    assert set(defaults["settings"]) <= props
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema({"settings": {"not_a_setting": 1}})


def test_notes_tell_how_to_reach_the_api(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    assert "/readyz" in rendered.notes or "https://m4v.example.com" in rendered.notes, name


def test_notes_warn_that_without_a_signing_secret_no_webhook_is_sent() -> None:
    """m4v_core/webhooks.py refuses to POST without M4V_WEBHOOK_SECRET; NOTES must not promise otherwise."""
    notes = render().notes
    assert "no webhook is sent" in notes and 'outcome="refused"' in notes
    assert "no webhook is sent" not in render(VARIANTS["external-redis"]).notes  # sets secrets.webhookSecret


def test_in_chart_redis_never_evicts_and_fsyncs_every_write() -> None:
    redis_sets = render().kind("StatefulSet")
    (redis,) = [d for d in redis_sets if labels(d).get("app.kubernetes.io/component") == "redis"]
    args = container(redis, "redis")["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--appendonly") + 1] == "yes"


def test_the_worker_spool_is_mounted_and_can_be_a_shared_claim() -> None:
    """Videos S3 refused wait in M4V_SPOOL_DIR: a volume of its own, a PersistentVolumeClaim when one is given
    (an S3 outage followed by a rollout then loses none); an emptyDir otherwise."""
    for values, expected in (
        ({}, {"emptyDir": {"sizeLimit": "8Gi"}}),
        (
            {"worker": {"spool": {"existingClaim": "m4v-spool"}}},
            {"persistentVolumeClaim": {"claimName": "m4v-spool"}},
        ),
    ):
        deployment = render(values).one("Deployment", "worker")
        worker = container(deployment, "worker")
        env = {e["name"]: e.get("value") for e in worker["env"]}
        mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
        assert env["M4V_SPOOL_DIR"] == mounts["spool"] == "/spool"
        (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "spool"]
        assert {k: v for k, v in volume.items() if k != "name"} == expected
