"""`m4v convert`: public checkpoints into our layout (model/loading.py, docs/MODEL.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

convert_app = typer.Typer(no_args_is_help=True, help="Convert public checkpoints into M4V checkpoints.")
SERVABLE = ("attn-768p", "m4v-768p")


@convert_app.command("pyramid-flow")
def pyramid_flow(
    src: Annotated[Path, typer.Argument(help="PyramidFlow-miniFLUX folder (rain1011/pyramid-flow-miniflux)")],
    dst: Annotated[Path, typer.Argument(help="checkpoint directory to write")],
    preset: Annotated[str, typer.Option("--preset", help="attn-768p or m4v-768p")] = "attn-768p",
    allow_random_vae: Annotated[
        bool,
        typer.Option(
            "--allow-random-vae",
            help="write the checkpoint although PRESET's VAE gets no PyramidFlow tensors (randomly "
            "initialised; serving it then needs M4V_ALLOW_RANDOM_WEIGHTS=true)",
        ),
    ] = False,
) -> None:
    """Convert PyramidFlow-miniFLUX's 768p DiT and its causal video VAE's decoder to PRESET's layout; the
    report is printed and saved as DST/conversion_report.json; DST links SRC's text encoder folders."""
    from model.config import get_preset
    from model.pyramid_flow.convert import IncompleteConversionError, convert_pyramid_flow
    from model.pyramid_flow.layout import DIT_DIR, is_pyramidflow_folder

    console = Console(soft_wrap=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if preset not in SERVABLE:
        raise typer.BadParameter(f"preset {preset!r}: choose one of {list(SERVABLE)}", param_hint="--preset")
    if not is_pyramidflow_folder(src):
        raise typer.BadParameter(f"{src} has no {DIT_DIR}/ folder (not a PyramidFlow-miniFLUX download)")
    try:
        report = convert_pyramid_flow(src, dst, get_preset(preset), allow_random=allow_random_vae)
    except IncompleteConversionError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        console.print("pass --allow-random-vae to write it anyway")
        raise typer.Exit(1) from None
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(escape(report.summary()))
    console.print(f"wrote {escape(str(dst))} (report: conversion_report.json)")
