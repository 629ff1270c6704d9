"""The playground in a real browser (the distribution's headless Chromium) against `m4v up`.

One job is generated and watched: the progress bar advances, the preview <video> gets its HLS source before
the job ends, the final <video> lasts the requested frames / fps. A second job is canceled from the page and
ends `canceled` with its partial video. A screenshot is saved in the test's tmp dir; with
M4V_SCREENSHOT=docs/playground.png it also refreshes the README's picture (reduced to a small palette PNG).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.browser import browser, chromium_or_skip

FRAMES, FPS = 17, 8  # the tiny preset's default length, 2.125 s
JOB_TIMEOUT_MS = 240_000  # generous: the test box is a shared 2-core machine
FINISHED = (
    "['succeeded', 'failed', 'canceled', 'timed_out']"
    ".includes(document.getElementById('job-status').textContent)"
)

# Records, in order, what the page shows: status pills, progress values (each record's old value: the
# whole history), and the preview <video>'s src. MutationObserver records arrive in mutation order.
RECORDER = """() => {
  window.__seen = [];
  const job = document.getElementById('job');
  new MutationObserver((records) => {
    for (const r of records) {
      const t = r.target;
      if (r.type === 'attributes' && t.id === 'job-progress') window.__seen.push(['progress', r.oldValue]);
      else if (r.type === 'attributes' && t.id === 'preview' && t.getAttribute('src'))
        window.__seen.push(['preview-src', t.getAttribute('src')]);
      else if (r.type === 'childList' && t.id === 'job-status')
        for (const n of r.addedNodes) window.__seen.push(['status', n.textContent]);
    }
  }).observe(job, {subtree: true, childList: true, attributes: true, attributeOldValue: true,
                   attributeFilter: ['value', 'src']});
}"""


def _start_up(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`m4v up` on a free port; returns the process and the playground URL it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("M4V_")}
    argv = [sys.executable, "-m", "m4v_cli", "up", "--port", "0", "--home", str(home)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stderr=out, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"playground \(in a browser\): (http://\S+)", log.read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    raise AssertionError(f"m4v up printed no playground URL (exit {proc.poll()}):\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _status_is(status: str) -> str:
    return f"document.getElementById('job-status').textContent === {status!r}"


def _job(api: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{api}/jobs/{job_id}", timeout=10).json()  # type: ignore[no-any-return]


def _save_screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    if target := os.environ.get("M4V_SCREENSHOT"):
        with Image.open(path) as img:
            img.convert("RGB").quantize(colors=64).save(target, optimize=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_playground_generates_watches_and_cancels_in_a_browser(tmp_path: Path) -> None:
    chromium_or_skip()  # before starting the stack
    proc, url = _start_up(tmp_path / "home", tmp_path / "up.log")
    api = url.removesuffix("/playground/")
    try:
        with browser(tmp_path / "profile") as context:
            page = context.new_page()
            page.goto(api + "/")  # GET / redirects to the playground
            assert page.url == url
            page.wait_for_selector("body[data-ready=true]")
            page.evaluate(RECORDER)

            # --- one job, watched to the end ---
            page.fill("#prompt", "a red circle moving right")
            page.click("#compose summary")
            assert page.input_value("#num_frames") == str(FRAMES)  # the preset's options fill the form
            page.fill("#fps", str(FPS))
            page.fill("#seed", "7")
            page.fill("#first_frame_steps", "1, 1, 1")
            page.fill("#later_frame_steps", "1, 1, 1")
            page.click("#submit")
            page.wait_for_function(FINISHED, timeout=JOB_TIMEOUT_MS)
            job_id = page.get_attribute("#job", "data-job-id")
            assert page.text_content("#job-status") == "succeeded", page.text_content("#job-error")
            seen = page.evaluate("window.__seen")
            statuses = [v for k, v in seen if k == "status"]
            assert statuses[-2:] == ["running", "succeeded"], seen
            progress = [float(v) for k, v in seen if k == "progress" and v is not None]
            assert len({p for p in progress if 0 < p < 100}) >= 2, f"progress did not advance: {seen}"
            assert progress == sorted(progress), f"progress went backwards: {progress}"
            assert page.get_attribute("#job-progress", "value") == "100"
            events = [k if k != "status" else f"status:{v}" for k, v in seen]
            assert "preview-src" in events, f"the preview never got a source: {seen}"
            assert events.index("preview-src") < events.index("status:succeeded"), seen
            assert page.get_attribute("#preview", "data-playlist").split("?")[0].endswith("/index.m3u8")

            page.wait_for_function("document.getElementById('final').readyState >= 1", timeout=60_000)
            duration = page.evaluate("document.getElementById('final').duration")
            assert duration == pytest.approx(FRAMES / FPS, abs=1e-3)
            final_src = page.get_attribute("#final", "src")
            assert final_src and page.get_attribute("#download", "href") == final_src
            assert page.text_content(f"#jobs li[data-job-id='{job_id}'] .status") == "succeeded"
            # the preview plays: hls.js has buffered the (now ended) playlist
            page.wait_for_function("document.getElementById('preview').readyState >= 2", timeout=60_000)
            _save_screenshot(page, tmp_path / "playground.png")

            # --- a second job, canceled from the page: it ends canceled with its partial video ---
            page.evaluate("window.__seen = []")
            page.fill("#prompt", "a slow blue square")
            page.select_option("#num_frames", "33")
            page.fill("#later_frame_steps", "100, 100, 100")  # long enough to be canceled mid-way
            page.click("#submit")
            page.wait_for_function(
                f"document.getElementById('job').dataset.jobId !== {job_id!r}"
                " && document.getElementById('preview').dataset.playlist",
                timeout=JOB_TIMEOUT_MS,
            )
            second = page.get_attribute("#job", "data-job-id")
            assert page.text_content("#job-status") == "running"
            page.click("#cancel")
            page.wait_for_function(_status_is("canceled"), timeout=JOB_TIMEOUT_MS)
            page.wait_for_function("document.getElementById('final').readyState >= 1", timeout=60_000)
            record = _job(api, second)
            assert record["status"] == "canceled"
            assert record["result"]["partial"] is True
            frames = record["result"]["frames"]
            assert 1 <= frames < 33
            assert page.evaluate("document.getElementById('final').duration") == pytest.approx(
                frames / FPS, abs=1e-3
            )
            assert "Partial video" in page.text_content("#final-caption")
            listed = page.eval_on_selector_all("#jobs li", "els => els.map(e => e.dataset.jobId)")
            assert listed == [second, job_id]  # this tab's jobs, newest first
    finally:
        _stop(proc)
