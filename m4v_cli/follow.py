"""Follow a job in the terminal: the progress bar, and Ctrl-C that asks to cancel (a second one detaches)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from m4v_cli.output import CLIError
from m4v_cli.progress import JobProgressView
from m4v_client import Client, SSEEvent

DETACHED_EXIT = 130


def event_dict(event: SSEEvent) -> dict[str, Any]:
    data = event.json()
    return {"event": event.event, **(data if isinstance(data, dict) else {})}


def follow_job(m4v: Client, job: dict[str, Any], console: Console) -> dict[str, Any]:
    """The finished job. The first Ctrl-C cancels the job and keeps following it to its end; the second
    leaves it running on the server (CLIError with exit code 130)."""
    job_id = job["id"]
    interrupts = 0
    announced = False
    with JobProgressView(console) as view:
        while True:
            try:
                if not announced:
                    announced = True
                    view({"event": "submitted", **job})
                return m4v.wait(job_id, progress=lambda ev: view(event_dict(ev)))
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts > 1:
                    raise CLIError(
                        f"detached; the job goes on: m4v jobs wait {job_id}", exit_code=DETACHED_EXIT
                    ) from None
                m4v.cancel(job_id)
                console.print("cancel requested: the job stops at its next step (Ctrl-C again to detach)")
