"""A rich progress bar fed by job events: percent, status (queue position)/stage/step, ETA, elapsed time."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def describe(event: dict[str, Any]) -> tuple[str, float | None]:
    """(label, percent) for one event; percent None when the event carries no progress."""
    progress = event.get("progress") if isinstance(event.get("progress"), dict) else None
    if progress is None and "percent" in event:
        progress = event  # a progress event whose data is the JobProgress itself
    status = event.get("status")
    if progress is None:
        label = str(status or event.get("event", ""))
        if status == "queued" and event.get("queue_position") is not None:
            label += f" (position {event['queue_position']})"
        if event.get("eta_s") is not None:
            label += f" · ETA {float(event['eta_s']):.0f}s"
        return label, None
    label = str(status or "running")
    if progress.get("steps_total"):
        stage = int(progress.get("stage", 0)) + 1
        label += f" · stage {stage} step {progress.get('step', 0)}/{progress['steps_total']}"
    if progress.get("units_total"):
        label += f" · frame {progress.get('units_done', 0)}/{progress['units_total']}"
    eta = event.get("eta_s")
    if eta is not None:
        label += f" · ETA {float(eta):.0f}s"
    return label, float(progress.get("percent", 0.0))


class JobProgressView:
    """Context manager; call it with each event dict."""

    def __init__(self, console: Console, title: str = "generating"):
        self._progress = Progress(
            TextColumn("[bold]{task.fields[title]}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._title = title
        self._task: TaskID | None = None
        self.events = 0

    def __enter__(self) -> JobProgressView:
        self._progress.start()
        self._task = self._progress.add_task("submitting", total=100.0, title=self._title)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        assert self._task is not None
        self.events += 1
        label, percent = describe(event)
        if event.get("event") == "submitted" and event.get("id"):
            self._progress.console.print(f"job [cyan]{event['id']}[/] submitted")
        if event.get("status") == "succeeded":
            percent = 100.0
        if percent is None:
            self._progress.update(self._task, description=label)
        else:
            self._progress.update(self._task, description=label, completed=min(percent, 100.0))
