"""Render the Helm chart offline with the Helm 4 SDK (helm-python-sdk: libhelm_c, no cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "m4v-serve"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VARIANTS: dict[str, dict[str, Any]] = {"default": {}} | {
    p.name.removesuffix("-values.yaml"): yaml.safe_load(p.read_text()) for p in CI_VALUES
}
KUBE_VERSION = "1.35.0"  # newest strict schema set in kubernetes-validate we validate against


@dataclass(frozen=True)
class Rendered:
    """One rendered chart: documents (parsed), raw text per template, the NOTES."""

    docs: list[dict[str, Any]]
    texts: dict[str, str]
    notes: str

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, component: str) -> dict[str, Any]:
        found = [d for d in self.kind(kind) if labels(d).get("app.kubernetes.io/component") == component]
        assert len(found) == 1, f"{len(found)} {kind} objects for component {component}"
        return found[0]


def labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc.get("metadata", {}).get("labels", {}) or {}


def render(values: dict[str, Any] | None = None, release: str = "rel", namespace: str = "m4v") -> Rendered:
    import helm_python as helm  # the native library loads here, not at collection

    with helm.Chart.load(CHART) as chart:
        texts = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    notes = ""
    for name, text in sorted(texts.items()):
        if name.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(docs=docs, texts=texts, notes=notes)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(doc)["containers"] if c["name"] == name)


def env_names(rendered: Rendered, c: dict[str, Any]) -> set[str]:
    """Every variable the container gets: env entries plus the keys of ConfigMaps/Secrets it loads whole."""
    names = {e["name"] for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in source:
                doc = next(d for d in rendered.kind(kind) if d["metadata"]["name"] == source[ref]["name"])
                names |= set(doc.get("data", {}))
    return names
