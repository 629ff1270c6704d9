"""One logging setup (m4v_core/logs.py) for the API and the workers: the same JSON shape from every logger."""

from __future__ import annotations

import json
import subprocess
import sys

import m4v_core.logs
import worker.main

API_PROCESS = """
import logging
from m4v_core import ApiSettings
from service.app import create_app
create_app(ApiSettings(log_level="INFO", log_json=True))
logging.getLogger("m4v_core.webhooks").info("webhook attempt", extra={"job_id": "j1"})
logging.getLogger("service.access").info("request", extra={"status": 200})
logging.getLogger("uvicorn.error").info("Started server process")
logging.getLogger("uvicorn.access").info("GET / 200")
"""


def test_api_process_logs_every_logger_as_one_json_shape_and_no_uvicorn_access_log() -> None:
    out = subprocess.run([sys.executable, "-c", API_PROCESS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    by_logger = {line["logger"]: line for line in lines}
    # the webhook dispatcher's INFO lines were dropped in the API process (no handler above WARNING)
    assert by_logger["m4v_core.webhooks"]["job_id"] == "j1"
    assert by_logger["service.access"]["status"] == 200
    assert "uvicorn.error" in by_logger and "uvicorn.access" not in by_logger
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line) and line["level"] == "INFO"
        assert len(line["ts"]) == len("2025-01-01T00:00:00.000+00:00")  # milliseconds, UTC


def test_the_worker_uses_the_same_setup() -> None:
    assert worker.main.configure_logging is m4v_core.logs.configure_logging
