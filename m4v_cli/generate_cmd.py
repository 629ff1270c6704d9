"""`m4v generate`: submit a job with any request field, follow it with a progress bar, save the MP4, print the
video URL (or the job as JSON)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from m4v_cli.follow import follow_job
from m4v_cli.inputs import request_fields
from m4v_cli.output import DEFAULT_SERVER, CLIError, JsonOpt, KeyOpt, ServerOpt, client, print_json, run

OutOpt = Annotated[Path, typer.Option("--output", "-o", help="where to write the MP4")]
InputOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input", "-i", help="any request field as key=value (JSON values: -i seed=7 -i size=128x128)"
    ),
]


def run_generate(
    console: Console,
    server: str,
    prompt: str,
    out: Path,
    fields: dict[str, Any],
    api_key: str | None,
    as_json: bool = False,
    wait: bool = True,
) -> int:
    """Submit, follow, download; prints the outcome; returns the process exit code (output.py)."""
    started = time.monotonic()
    with client(server, api_key) as m4v:
        job = m4v.submit(prompt, **fields)
        if not wait:
            print_json(job) if as_json else print(job["id"])
            return 0
        job = follow_job(m4v, job, console)
        if job.get("status") != "succeeded":
            if as_json:
                print_json(job)
            err = job.get("error") or {}
            raise CLIError(
                f"job {job['id']} {job.get('status')}: {err.get('type', '')} {err.get('message', '')}"
            )
        m4v.download(job["id"], out)
    result = job.get("result") or {}
    console.print(
        f"[green]saved[/] {out} ({result.get('width')}x{result.get('height')}, "
        f"{result.get('frames')} frames, seed {result.get('seed')}) in {time.monotonic() - started:.1f}s",
        soft_wrap=True,
    )
    print_json(job) if as_json else print(result.get("video_url") or f"{server}/jobs/{job['id']}/video")
    return 0


def generate_exit_code(console: Console, server: str, prompt: str, out: Path, fields: dict[str, Any]) -> int:
    """run_generate for `m4v up --generate`: errors printed, the exit code returned."""
    try:
        return run_generate(console, server, prompt, out, fields, None)
    except CLIError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}", soft_wrap=True)
        return exc.exit_code


def generate(
    prompt: Annotated[str, typer.Argument(help="text prompt")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    output: OutOpt = Path("out.mp4"),
    inputs: InputOpt = None,
    frames: Annotated[int | None, typer.Option("--frames", "-n", help="number of frames")] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="seconds (instead of --frames)")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="random seed (random if unset)")] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="WIDTHxHEIGHT, one of the preset's sizes")
    ] = None,
    fps: Annotated[int | None, typer.Option("--fps", help="frames per second of the MP4")] = None,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt", help="what to avoid")] = None,
    guidance_scale: Annotated[float | None, typer.Option("--guidance-scale")] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="low, normal or high")] = None,
    webhook_url: Annotated[str | None, typer.Option("--webhook-url")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="job deadline, seconds")] = None,
    as_json: JsonOpt = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return at once")] = False,
) -> None:
    """Generate a video on a running server: progress bar on stderr, the MP4 saved, its URL on stdout.
    Ctrl-C asks to cancel the job; a second Ctrl-C leaves it running."""
    flags = {
        "num_frames": frames,
        "duration_s": duration,
        "seed": seed,
        "size": size,
        "fps": fps,
        "negative_prompt": negative_prompt,
        "guidance_scale": guidance_scale,
        "priority": priority,
        "webhook_url": webhook_url,
        "timeout_s": timeout,
    }
    fields = request_fields(flags, inputs or [])
    console = Console(stderr=True)
    run(lambda: run_generate(console, server, prompt, output, fields, api_key, as_json, not no_wait))
