"""The `m4v` command: up (everything on one machine), api, worker, generate, keys, convert, version."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from m4v_cli.client import CLIError, GenerateOptions, generate
from m4v_cli.convert import convert_app
from m4v_cli.embedded import Stack, StackError, UpOptions, default_home, start_stack
from m4v_cli.keys import keys_app
from m4v_cli.playground import playground_url
from m4v_cli.progress import JobProgressView

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # plain tracebacks: children of `m4v up` write them to log files
    help="M4V text-to-video service.",
)
app.add_typer(keys_app, name="keys")
app.add_typer(convert_app, name="convert")
log = logging.getLogger("m4v_cli")

ServerOpt = Annotated[str, typer.Option("--server", "-s", envvar="M4V_SERVER", help="API base URL")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="where to write the MP4")]
FramesOpt = Annotated[
    int | None, typer.Option("--frames", "-n", help="number of frames (server default if unset)")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed (random if unset)")]
SizeOpt = Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT, one of the preset's resolutions")]
FpsOpt = Annotated[int | None, typer.Option("--fps", help="frames per second of the MP4")]
NegOpt = Annotated[str | None, typer.Option("--negative-prompt", help="what to steer away from")]
PrioOpt = Annotated[str | None, typer.Option("--priority", help="low, normal or high")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="M4V_API_KEY", help="API key (Bearer)")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _body(
    frames: int | None,
    seed: int | None,
    size: str | None,
    fps: int | None,
    negative: str | None,
    priority: str | None,
) -> dict[str, object]:
    body: dict[str, object] = {
        "num_frames": frames,
        "seed": seed,
        "fps": fps,
        "negative_prompt": negative,
        "priority": priority,
    }
    if size is not None:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise typer.BadParameter(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 128x128") from None
        body.update(width=width, height=height)
    return body


def run_generate(
    console: Console, server: str, prompt: str, out: Path, body: dict[str, object], api_key: str | None
) -> int:
    """Generate one video against server; prints the outcome; returns the process exit code."""
    opts = GenerateOptions(server=server, prompt=prompt, out=out, body=body, api_key=api_key)
    started = time.monotonic()
    try:
        with JobProgressView(console) as view:
            job = generate(opts, view)
    except CLIError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}", soft_wrap=True)
        return exc.exit_code
    result = job.get("result") or {}
    console.print(
        f"[green]saved[/] {out} ({result.get('width')}x{result.get('height')}, "
        f"{result.get('frames')} frames, seed {result.get('seed')}) in {time.monotonic() - started:.1f}s"
    )
    return 0


@app.command("generate")
def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="text prompt")],
    server: ServerOpt = "http://127.0.0.1:8000",
    output: OutOpt = Path("out.mp4"),
    frames: FramesOpt = None,
    seed: SeedOpt = None,
    size: SizeOpt = None,
    fps: FpsOpt = None,
    negative_prompt: NegOpt = None,
    priority: PrioOpt = None,
    api_key: KeyOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Generate a video on a running server and save it as an MP4."""
    _setup_logging(verbose)
    body = _body(frames, seed, size, fps, negative_prompt, priority)
    raise typer.Exit(run_generate(Console(stderr=True), server, prompt, output, body, api_key))


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("up")
def up_cmd(
    home: Annotated[Path | None, typer.Option(help="state dir (default $M4V_HOME or ~/.m4v)")] = None,
    host: Annotated[str, typer.Option(help="bind address of the API")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="API port (default $M4V_API_PORT or 8000; 0 = any)")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="model preset (default $M4V_PRESET; tiny without CUDA)")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cuda or cpu (default $M4V_DEVICE or auto)")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--generate", help="make one video with this prompt, then stop")
    ] = None,
    output: OutOpt = Path("out.mp4"),
    frames: FramesOpt = None,
    seed: SeedOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start Redis and S3 (embedded unless configured), the API and one worker; Ctrl-C stops them all."""
    _setup_logging(verbose)
    console = Console(stderr=True)
    state = home or default_home()
    # One-shot runs take any free port so that they never collide with a server already running.
    opts = UpOptions(
        home=state,
        host=host,
        port=0 if prompt is not None and port is None else port,
        preset=preset,
        device=device,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    stack: Stack | None = None
    code = 0
    try:
        with console.status("starting") as status:
            stack = start_stack(opts, on_step=lambda s: status.update(s))
        info = stack.worker_info
        console.print(
            f"[green]m4v is up[/] at [bold]{stack.url}[/] (worker {stack.env['M4V_WORKER_NAME']}: "
            f"preset {(info and info.preset) or stack.env.get('M4V_PRESET', '?')}, "
            f"device {(info and info.device) or '?'}); state in {state}",
            soft_wrap=True,  # one line even when stderr is a pipe: scripts look for the URL
        )
        page = playground_url(stack.url)
        if page is not None:
            console.print(f"playground (in a browser): [bold]{page}[/]", soft_wrap=True)
        if prompt is not None:
            body = _body(frames, seed, None, None, None, None)
            code = _generate_while_watching(console, stack, prompt, output, body)
        else:
            console.print("press Ctrl-C to stop")
            code = _watch(console, stack) or 0
    except KeyboardInterrupt:
        console.print("stopping")
    except StackError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        code = 1
    finally:
        if stack is not None:
            stack.stop()
    raise typer.Exit(code)


def _watch(console: Console, stack: Stack, done: Callable[[], bool] = lambda: False) -> int | None:
    """Block until done() or a child dies; 1 (after printing its log tail) if one died, else None."""
    while not done():
        dead = stack.dead_child()
        if dead is not None:
            tail = escape(dead.log_tail())
            console.print(f"[red]{dead.name} exited with {dead.exit_code()}[/]; log {dead.log_path}:\n{tail}")
            return 1
        time.sleep(0.5)
    return None


def _generate_while_watching(
    console: Console, stack: Stack, prompt: str, out: Path, body: dict[str, object]
) -> int:
    """Run the client in a thread so that a crashed API or worker ends the run instead of hanging it."""
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(run_generate(console, stack.url, prompt, out, body, None)),
        name="m4v-generate",
        daemon=True,  # abandoned if a child dies; stopping the stack then ends its HTTP calls
    )
    thread.start()
    died = _watch(console, stack, done=lambda: not thread.is_alive())
    if died is not None:
        return died
    return codes[0] if codes else 1


@app.command("api")
def api_cmd() -> None:
    """Run the HTTP API (uvicorn) with settings from M4V_* environment variables."""
    import uvicorn

    from m4v_core.settings import ApiSettings
    from service.app import create_app

    settings = ApiSettings()  # type: ignore[call-arg]  # fields from M4V_* env; create_app configures logging
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # create_app set up logging (m4v_core/logs.py); uvicorn must not replace it
        access_log=False,  # the API logs each request itself (service.access), in the same JSON shape
    )


@app.command("worker")
def worker_cmd() -> None:
    """Run one GPU (or CPU) worker with settings from M4V_* environment variables."""
    from m4v_core.settings import WorkerSettings
    from worker.main import run

    run(WorkerSettings())  # type: ignore[call-arg]  # fields from M4V_* env


@app.command("version")
def version_cmd() -> None:
    """Print the installed m4v-serve version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(version("m4v-serve"))
    except PackageNotFoundError:
        typer.echo("unknown (not installed)")
        sys.exit(1)
