"""A TCP proxy in front of the real Redis that loses the reply of a chosen transaction after Redis ran it.

Everything passes through unchanged, except a client write that contains `marker` and an EXEC: the proxy
stops passing that connection's replies, forwards the write, waits until `committed()` says Redis applied
it, then closes the connection. The client sees its transaction fail, although it committed: what a
timeout or a connection cut after EXEC looks like to the API. `cuts` bounds how many such writes are cut.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COMMIT_WAIT_S = 10.0


@dataclass
class ReplyCutter:
    upstream: tuple[str, int]
    marker: bytes
    committed: Callable[[], bool]
    cuts: int = 1
    cut_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sockets: list[socket.socket] = field(default_factory=list)

    def start(self) -> int:
        """Listen on 127.0.0.1; returns the port."""
        self._server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self._server.getsockname()[1])

    def close(self) -> None:
        self._server.close()
        for s in self._sockets:
            _close(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            hold = threading.Event()
            threading.Thread(target=self._up, args=(client, server, hold), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, hold), daemon=True).start()

    def _take_cut(self, chunk: bytes) -> bool:
        if self.marker not in chunk or b"EXEC\r\n" not in chunk:
            return False
        with self._lock:
            if self.cut_count >= self.cuts:
                return False
            self.cut_count += 1
            return True

    def _up(self, client: socket.socket, server: socket.socket, hold: threading.Event) -> None:
        while chunk := _recv(client):
            if not self._take_cut(chunk):
                server.sendall(chunk)
                continue
            hold.set()  # no reply of this connection reaches the client any more
            server.sendall(chunk)
            deadline = time.monotonic() + COMMIT_WAIT_S
            while not self.committed() and time.monotonic() < deadline:
                time.sleep(0.01)
            break
        _close(client)
        _close(server)

    @staticmethod
    def _down(server: socket.socket, client: socket.socket, hold: threading.Event) -> None:
        while chunk := _recv(server):
            if hold.is_set():
                continue
            try:
                client.sendall(chunk)
            except OSError:
                return
        _close(client)


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
