"""The worker's daemon threads (heartbeat, webhook dispatcher, recovery) share one start/stop shape."""

from __future__ import annotations

import threading
from typing import Self


class BackgroundThread:
    """A daemon thread running self._run() until stop(); _run() polls self._stop between rounds."""

    thread_name = "m4v-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        raise NotImplementedError
