"""The strict accounting of one conversion: every source tensor used exactly once or dropped with a reason,
every target parameter filled or listed as newly initialised."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_NAME = "conversion_report.json"
# Newly initialised parameters that are expected (not "random weights"): M4V's own MM-DiM blocks.
EXPECTED_NEW_PREFIX = "network.single_blocks."
EXPECTED_NEW_REASON_START = "M4V MM-DiM block"


def random_parts_of(new_init: dict[str, str]) -> list[str]:
    """Top-level modules with newly initialised parameters other than M4V's MM-DiM blocks."""
    return sorted(
        {
            k.split(".", 1)[0]
            for k, why in new_init.items()
            if not (k.startswith(EXPECTED_NEW_PREFIX) and why.startswith(EXPECTED_NEW_REASON_START))
        }
    )


@dataclass
class ConversionReport:
    source: str
    preset: str
    filled: dict[str, list[str]] = field(default_factory=dict)  # target key -> source keys it was made from
    new_init: dict[str, str] = field(default_factory=dict)  # target key -> why it has no source
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> why it is not used

    def fill(self, target: str, sources: list[str]) -> None:
        if target in self.filled:
            raise ValueError(f"target {target!r} filled twice")
        self.filled[target] = sources

    def check(self, source_keys: set[str], target_keys: set[str]) -> None:
        """Raise unless the accounting is exact (see the module docstring)."""
        used = Counter(k for srcs in self.filled.values() for k in srcs)
        errors = []
        twice = sorted(k for k, n in used.items() if n > 1)
        unknown = sorted(set(used) - source_keys)
        unaccounted = sorted(source_keys - set(used) - set(self.dropped))
        both = sorted(set(used) & set(self.dropped))
        missing = sorted(target_keys - set(self.filled) - set(self.new_init))
        extra = sorted((set(self.filled) | set(self.new_init)) - target_keys)
        for what, keys in (
            ("source tensors used more than once", twice),
            ("source tensors the mapping names but the checkpoint lacks", unknown),
            ("source tensors neither used nor dropped", unaccounted),
            ("source tensors both used and dropped", both),
            ("target parameters neither filled nor newly initialised", missing),
            ("target parameters the model does not have", extra),
        ):
            if keys:
                errors.append(f"{len(keys)} {what}: {keys[:10]}")
        if errors:
            raise ValueError(f"conversion of {self.source} is not exact: " + "; ".join(errors))

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "preset": self.preset,
            "counts": {
                "filled": len(self.filled),
                "newly_initialised": len(self.new_init),
                "dropped": len(self.dropped),
            },
            "filled": self.filled,
            "newly_initialised": self.new_init,
            "dropped": self.dropped,
        }

    def summary(self) -> str:
        """Human-readable: counts, then newly initialised and dropped tensors grouped by reason."""
        lines = [
            f"PyramidFlow -> {self.preset}: {len(self.filled)} parameters filled from {self.source}, "
            f"{len(self.new_init)} newly initialised, {len(self.dropped)} source tensors dropped"
        ]
        for title, items in (("newly initialised", self.new_init), ("dropped", self.dropped)):
            by_reason: dict[str, list[str]] = {}
            for key, reason in items.items():
                by_reason.setdefault(reason, []).append(key)
            for reason, keys in by_reason.items():
                shown = ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
                lines.append(f"  {title} ({len(keys)}): {reason}: {shown}")
        return "\n".join(lines)

    def save(self, folder: Path) -> Path:
        path = folder / REPORT_NAME
        path.write_text(json.dumps(self.as_dict(), indent=2))
        return path
