"""`-i key=value` request fields: the value is JSON when it parses (numbers, lists, true), else a string;
`size=WxH` sets width and height."""

from __future__ import annotations

import json
from typing import Any

import typer


def parse_size(size: str) -> dict[str, int]:
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"size {size!r}: expected WIDTHxHEIGHT, e.g. 128x128") from None
    return {"width": width, "height": height}


def parse_inputs(items: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"-i {item!r}: expected key=value, e.g. -i seed=7")
        key = key.strip().replace("-", "_")
        if key == "size":
            fields.update(parse_size(raw))
            continue
        try:
            fields[key] = json.loads(raw)
        except ValueError:
            fields[key] = raw
    return fields


def request_fields(flags: dict[str, Any], inputs: list[str]) -> dict[str, Any]:
    """Named flags (None = not given) and -i fields; a -i field wins over a flag of the same name."""
    fields = {k: v for k, v in flags.items() if v is not None}
    size = fields.pop("size", None)
    if size is not None:
        fields.update(parse_size(size))
    fields.update(parse_inputs(inputs))
    return fields
