"""Every Settings field is read somewhere outside its definition: a dead setting (documented, set by the chart
or compose, read by nothing) fails this test."""

from __future__ import annotations

import ast
from pathlib import Path

from m4v_core import Settings

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("m4v_core", "service", "worker", "m4v_cli", "model", "bench", "docker")
DEFINITION = ROOT / "m4v_core" / "settings.py"


def _is_settings(node: ast.expr) -> bool:
    """`settings`, `self.settings`, `ctx.settings`, `s` (a Settings local) ..."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return "settings" in name.lower()


def settings_reads() -> set[str]:
    """Attribute reads on a settings object, and getattr(settings, "name") with a literal name."""
    found: set[str] = set()
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            if path == DEFINITION:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Load)
                    and _is_settings(node.value)
                ):
                    found.add(node.attr)
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "getattr"
                    and len(node.args) >= 2
                    and _is_settings(node.args[0])
                    and isinstance(node.args[1], ast.Constant)
                ):
                    found.add(str(node.args[1].value))
    return found


def test_every_settings_field_is_read_somewhere() -> None:
    dead = sorted(set(Settings.model_fields) - settings_reads())
    assert dead == [], f"Settings fields read by nothing (wire them or remove them): {dead}"


def test_the_check_sees_a_dead_field() -> None:
    assert "preset" in settings_reads()
    assert "no_such_field" not in settings_reads()
