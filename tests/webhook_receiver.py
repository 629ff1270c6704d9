"""A real webhook receiver on 127.0.0.1 for integration tests (tests/e2e, tests/service, tests/worker)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A real HTTP server on 127.0.0.1 that records webhook deliveries; answers `codes` in turn, then 200.

    With `tls` (a server-side SSLContext) it speaks https.
    """

    def __init__(self, codes: list[int] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.codes = list(codes or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.codes.pop(0) if outer.codes else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.deliveries]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once `count` deliveries arrived, or after timeout_s (the caller asserts what came)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.deliveries) < count:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
