"""The dependency rules of docs/ARCHITECTURE.md, as import-linter contracts ([tool.importlinter] in
pyproject.toml): service never imports worker, worker never imports service, m4v_core imports neither,
model imports none of them, neither the API nor m4v_core imports torch, and the client (m4v_client) imports
none of our other packages nor torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe is not None, "import-linter is not installed (pip install -e '.[dev]')"
    return [exe, "--no-cache"]


def test_import_contracts_are_kept() -> None:
    out = subprocess.run(_lint_imports(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "6 kept, 0 broken" in out.stdout


def test_a_forbidden_import_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts bite: a copy of the packages where service imports worker fails the check."""
    for package in ("m4v_core", "service", "worker", "model", "m4v_cli", "m4v_client"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "service" / "eta.py").open("a") as f:
        f.write("\nimport worker.jobs  # noqa: E402\n")
    out = subprocess.run(
        _lint_imports(), cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": "."}
    )
    assert out.returncode != 0
    assert "the API (service) never imports the workers BROKEN" in out.stdout


def test_no_import_cycles_in_the_service_packages() -> None:
    """worker/eta.py, jobs.py and preview.py imported each other for JobContext (now worker/context.py)."""
    import grimp

    packages = ("m4v_core", "service", "worker")
    graph = grimp.build_graph(*packages)  # type-checking imports count: they were the cycle
    cycles = [
        (a, b)
        for a in sorted(graph.modules)
        for b in graph.find_modules_directly_imported_by(a)
        if b.startswith(packages) and graph.find_shortest_chain(importer=b, imported=a)
    ]
    assert cycles == []
