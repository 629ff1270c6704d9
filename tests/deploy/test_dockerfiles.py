"""Static checks of docker/Dockerfile.* (no Docker engine here): pinned bases, non-root, no baked secrets,
the API image installs no torch yet covers every module create_app imports, the arch filter of nvcc."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
# Imported inside try/except ImportError when present: by anyio, redis and starlette/fastapi, and by httpx
# for its command-line client (rich, pygments): not needed.
# greenlet: rq.local imports it when installed (playwright, a dev dependency, brings it); rq works without it
OPTIONAL_IMPORTS = {"sniffio", "cryptography", "orjson", "rich", "pygments", "greenlet"}
SECRET_WORDS = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|PRIVATE)", re.IGNORECASE)


@dataclass
class Stage:
    base: str
    name: str | None
    user: str | None
    lines: list[str]


def instructions(path: Path) -> list[str]:
    """Logical lines (continuations joined), comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def stages(path: Path) -> list[Stage]:
    out: list[Stage] = []
    for line in instructions(path):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            parts = rest.split()
            out.append(Stage(parts[0], parts[2] if len(parts) > 2 else None, None, []))
        elif out:
            out[-1].lines.append(line)
            if word.upper() == "USER":
                out[-1].user = rest.strip()
    return out


def test_both_dockerfiles_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.api", "Dockerfile.worker"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_by_version(path: Path) -> None:
    names = {s.name for s in stages(path) if s.name}
    for stage in stages(path):
        if stage.base in names:
            continue
        assert "$" not in stage.base, f"{stage.base}: base from a build arg cannot be checked"
        image, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{stage.base} is not pinned"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_and_runnable_stages_run_as_a_non_root_user(path: Path) -> None:
    all_stages = stages(path)
    runnable = [s for s in all_stages if any(line.upper().startswith("CMD") for line in s.lines)]
    assert all_stages[-1] in runnable
    for stage in runnable:
        assert stage.user is not None, f"stage {stage.name} has no USER"
        uid = stage.user.split(":")[0]
        assert uid not in ("root", "0"), stage.user


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_are_baked_into_the_images(path: Path) -> None:
    for line in instructions(path):
        word, _, rest = line.partition(" ")
        if word.upper() in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORDS.search(rest), line
        if word.upper() in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.pem\b|id_rsa|credentials", rest), line


def test_worker_image_exposes_the_metrics_port_and_builds_kernels_for_the_arch_arg() -> None:
    from m4v_core import Settings

    text = (DOCKER / "Dockerfile.worker").read_text()
    runtime = stages(DOCKER / "Dockerfile.worker")[-1]
    port = Settings().worker_metrics_port  # type: ignore[call-arg]  # fields from M4V_* env
    assert f"EXPOSE {port}" in runtime.lines
    assert re.search(r'ARG TORCH_CUDA_ARCH_LIST="8\.0;9\.0"', text)
    assert "MAMBA_FORCE_BUILD=TRUE" in text and "CAUSAL_CONV1D_FORCE_BUILD=TRUE" in text
    assert "devel" in stages(DOCKER / "Dockerfile.worker")[0].base and "runtime" in runtime.base
    for probe in ("worker_ready.py", "worker_drain.py"):
        assert (DOCKER / probe).is_file() and probe in text


def test_api_image_uses_proxy_headers_and_the_healthz_probe() -> None:
    text = " ".join(instructions(DOCKER / "Dockerfile.api"))
    assert '"--factory", "service.app:create_app"' in text and '"--proxy-headers"' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "--no-deps ." in text


def api_requirements() -> list[Requirement]:
    lines = (DOCKER / "api-requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_api_requirements_match_the_pyproject_pins() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    for req in api_requirements():
        assert req.name in pinned, f"{req.name} is not a project dependency"
        assert req.specifier == pinned[req.name].specifier, f"{req.name}: {req.specifier} vs pyproject"


def _closure(names: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [n.lower().replace("_", "-") for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if (
                r.marker is None
                or r.marker.evaluate({"extra": ""})
                or any(r.marker.evaluate({"extra": e}) for e in ("standard",))
            ):
                todo.append(r.name.lower().replace("_", "-"))
    return seen


def test_api_image_dependencies_cover_what_create_app_imports_and_exclude_torch() -> None:
    probe = (
        "import sys, json; before = set(sys.modules); from service.app import create_app; "
        "from m4v_core import Settings; create_app(Settings()); "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    dists_of = md.packages_distributions()
    ours = {"m4v_core", "service", "worker", "model", "m4v_cli"}
    needed = {
        d.lower().replace("_", "-")
        for m in modules - ours - set(sys.stdlib_module_names)
        if not m.startswith("_")
        for d in dists_of.get(m, [])
    }
    closure = _closure({r.name for r in api_requirements()})
    assert "torch" not in closure
    assert needed - closure - OPTIONAL_IMPORTS == set(), "API imports modules the API image would not install"


def _run_filter(tmp_path: Path, arch_list: str, *args: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "nvcc.real"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "REAL_NVCC": str(fake), "TORCH_CUDA_ARCH_LIST": arch_list}
    script = DOCKER / "nvcc-arch-filter.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env)


def test_nvcc_filter_keeps_only_the_listed_architectures(tmp_path: Path) -> None:
    args = [
        "-O3",
        "-gencode",
        "arch=compute_75,code=sm_75",
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=sm_90",
        "--generate-code=arch=compute_100,code=sm_100",
        "k.cu",
    ]
    result = _run_filter(tmp_path, "8.0;9.0", *args)
    assert result.returncode == 0, result.stderr
    passed = result.stdout.split()
    kept = ["-gencode", "arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
    assert passed == ["-O3", *kept, "k.cu"]


def test_nvcc_filter_refuses_to_drop_every_target(tmp_path: Path) -> None:
    result = _run_filter(tmp_path, "7.0", "-gencode", "arch=compute_80,code=sm_80", "k.cu")
    assert result.returncode == 2 and "matches none" in result.stderr
