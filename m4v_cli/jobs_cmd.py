"""`m4v jobs list|get|cancel|wait|download`: the caller's jobs on a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from m4v_cli.follow import follow_job
from m4v_cli.output import DEFAULT_SERVER, CLIError, JsonOpt, KeyOpt, ServerOpt, client, out, print_json, run

jobs_app = typer.Typer(no_args_is_help=True, help="The caller's jobs: list, get, cancel, wait, download.")
IdArg = Annotated[str, typer.Argument(help="job id")]


@jobs_app.command("list")
def list_cmd(
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    status: Annotated[
        list[str] | None, typer.Option("--status", help="only these statuses (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="jobs per page")] = 20,
    cursor: Annotated[str | None, typer.Option("--cursor", help="next_cursor of the previous page")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your jobs, newest first."""

    def body() -> None:
        with client(server, api_key) as m4v:
            page = m4v.list(status=status, limit=limit, cursor=cursor)
        if as_json:
            print_json(page)
            return
        table = Table("id", "status", "created", "progress", "prompt")
        for job in page["data"]:
            percent = f"{job['progress']['percent']:.0f}%"
            table.add_row(
                job["id"], job["status"], job["created_at"][:19], percent, job["spec"]["prompt"][:40]
            )
        out.print(table)
        if page["has_more"]:
            out.print(f"more: m4v jobs list --cursor {page['next_cursor']}")

    run(body)


@jobs_app.command("get")
def get_cmd(job_id: IdArg, server: ServerOpt = DEFAULT_SERVER, api_key: KeyOpt = None) -> None:
    """The job as JSON."""

    def body() -> None:
        with client(server, api_key) as m4v:
            print_json(m4v.get(job_id))

    run(body)


@jobs_app.command("cancel")
def cancel_cmd(
    job_id: IdArg, server: ServerOpt = DEFAULT_SERVER, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel: a queued job at once, a running one at its next step."""

    def body() -> None:
        with client(server, api_key) as m4v:
            job = m4v.cancel(job_id)
        print_json(job) if as_json else print(f"{job['id']} {job['status']}")

    run(body)


@jobs_app.command("wait")
def wait_cmd(
    job_id: IdArg, server: ServerOpt = DEFAULT_SERVER, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Follow the job to its end with a progress bar; exit 0 if it succeeded, 1 if not."""

    def body() -> int:
        with client(server, api_key) as m4v:
            job = follow_job(m4v, m4v.get(job_id), Console(stderr=True))
        print_json(job) if as_json else print(f"{job['id']} {job['status']}")
        return 0 if job["status"] == "succeeded" else 1

    run(body)


@jobs_app.command("download")
def download_cmd(
    job_id: IdArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="default <id>.mp4 (.jpg)")] = None,
    thumbnail: Annotated[bool, typer.Option("--thumbnail", help="the JPEG thumbnail instead")] = False,
) -> None:
    """Save the job's MP4 (or thumbnail); 409 (exit 2) while it has none."""
    variant = "thumbnail" if thumbnail else "video"
    target = output or Path(f"{job_id}.{'jpg' if thumbnail else 'mp4'}")

    def body() -> None:
        with client(server, api_key) as m4v:
            path = m4v.download(job_id, target, variant=variant)
        print(path)

    run(body)


__all__ = ["CLIError", "jobs_app"]
