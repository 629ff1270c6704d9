"""The `m4v` command: up (everything on one machine), api, worker, generate, jobs, info, env, keys, convert,
version."""

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

from m4v_cli.convert import convert_app
from m4v_cli.embedded import Stack, StackError, UpOptions, default_home, missing_for_up, start_stack
from m4v_cli.envfile import EnvFileError, apply_env_files
from m4v_cli.generate_cmd import generate, generate_exit_code
from m4v_cli.info_cmd import env, info
from m4v_cli.jobs_cmd import jobs_app
from m4v_cli.keys import keys_app
from m4v_cli.playground import playground_url

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # plain tracebacks: children of `m4v up` write them to log files
    help="M4V text-to-video service.",
)
app.add_typer(keys_app, name="keys")
app.add_typer(convert_app, name="convert")
app.add_typer(jobs_app, name="jobs")
app.command("generate")(generate)
app.command("info")(info)
app.command("env")(env)
log = logging.getLogger("m4v_cli")

OutOpt = Annotated[Path, typer.Option("--output", "-o", help="where to write the MP4")]
FramesOpt = Annotated[
    int | None, typer.Option("--frames", "-n", help="number of frames (server default if unset)")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed (random if unset)")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    config: Annotated[
        Path | None,
        typer.Option("--config", help="KEY=VALUE settings file (M4V_*); .env in this directory is read too"),
    ] = None,
    output: OutOpt = Path("out.mp4"),
    frames: FramesOpt = None,
    seed: SeedOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start Redis and S3 (embedded unless configured), the API and one worker; Ctrl-C stops them all."""
    _setup_logging(verbose)
    console = Console(stderr=True)
    try:
        read = apply_env_files(config)  # the environment wins over --config, --config over .env
    except (OSError, EnvFileError) as exc:
        console.print("[red]error:[/] " + escape(str(exc)), soft_wrap=True)
        raise typer.Exit(2) from None
    if read:
        console.print("settings from " + ", ".join(escape(str(p)) for p in read), soft_wrap=True)
    missing = missing_for_up()
    if missing:
        console.print(
            "[red]error:[/] " + escape(f"m4v up needs {', '.join(missing)}: pip install 'm4v-serve[local]'"),
            soft_wrap=True,
        )
        raise typer.Exit(2)
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
            body = {"num_frames": frames, "seed": seed}
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
        target=lambda: codes.append(generate_exit_code(console, stack.url, prompt, out, body)),
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
