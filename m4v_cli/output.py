"""What the client commands share: server and key options, the client, JSON output, error -> exit code.

Exit codes: 0 done, 1 a job that failed or a server that could not be reached or answered 5xx, 2 a request
the server refused (4xx, its message is printed), 130 detached after Ctrl-C.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from m4v_client import APIError, Client, M4VError

ServerOpt = Annotated[str, typer.Option("--server", "-s", envvar="M4V_SERVER", help="API base URL")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="M4V_API_KEY", help="API key (Bearer)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]
DEFAULT_SERVER = "http://127.0.0.1:8000"

err = Console(stderr=True)
out = Console(soft_wrap=True)


class CLIError(Exception):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def describe_api_error(exc: APIError) -> str:
    text = f"HTTP {exc.status_code} {exc.type}: {exc.message}"
    return text + (f" {exc.details}" if exc.details else "")


@contextmanager
def client(server: str, api_key: str | None) -> Iterator[Client]:
    """A Client whose errors become CLIError with the exit code of the module doc."""
    try:
        with Client(server, api_key=api_key) as m4v:
            yield m4v
    except APIError as exc:
        raise CLIError(describe_api_error(exc), exit_code=2 if exc.status_code < 500 else 1) from exc
    except httpx.TransportError as exc:
        raise CLIError(f"cannot reach {server}: {exc}") from exc
    except M4VError as exc:
        raise CLIError(str(exc)) from exc


def run(command: Callable[[], int | None]) -> None:
    """Run a command body; CLIError -> its message on stderr and its exit code."""
    try:
        code = command() or 0
    except CLIError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", soft_wrap=True)
        code = exc.exit_code
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
