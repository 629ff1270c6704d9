"""Every client command of `m4v` against a live API and worker: generate (flags, -i, --json, --no-wait, a
refused request, Ctrl-C), jobs list|get|cancel|wait|download, info, env."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import av
import httpx

from tests.e2e.cli_runner import cli_env, m4v, m4v_json
from tests.e2e.live_stack import LiveStack
from tests.e2e.worker_processes import ROOT

FAST = ["-n", "9", "-i", "first_frame_steps=[1,1,1]", "-i", "later_frame_steps=[1,1,1]"]
SLOW = ["-n", "9", "-i", "first_frame_steps=[100,100,100]", "-i", "later_frame_steps=[100,100,100]"]


def frames_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_generate_with_flags_and_inputs_saves_the_video_and_prints_its_url(
    live: LiveStack, tmp_path: Path
) -> None:
    out = tmp_path / "v.mp4"
    done = m4v(live, "generate", "a red circle", "-o", str(out), "--seed", "3", "--size", "128x128", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    url = done.stdout.strip()
    assert url.startswith("http") and httpx.get(url).content == out.read_bytes()
    assert frames_of(out) == 9

    job = m4v_json(live, "generate", "a blue square", "-o", str(out), "-i", "seed=8", "--json", *FAST)
    assert job["status"] == "succeeded" and job["spec"]["seed"] == 8
    # The same job through the OpenAI-style surface.
    video = httpx.get(f"{live.url}/v1/videos/{job['id']}", headers={"Authorization": f"Bearer {live.alice}"})
    assert video.json()["status"] == "completed"


def test_refused_request_exits_2_naming_the_field(live: LiveStack, tmp_path: Path) -> None:
    done = m4v(live, "generate", "x", "-o", str(tmp_path / "x.mp4"), "-i", "size=64x64")
    assert done.returncode == 2 and "width" in done.stderr and "validation_error" in done.stderr


def test_no_wait_then_jobs_wait_get_list_download(live: LiveStack, tmp_path: Path) -> None:
    submitted = m4v(live, "generate", "a green dot", "--no-wait", *FAST, key=live.bob)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.strip()
    waited = m4v_json(live, "jobs", "wait", job_id, "--json", key=live.bob)
    assert waited["id"] == job_id and waited["status"] == "succeeded"
    assert m4v_json(live, "jobs", "get", job_id, key=live.bob)["status"] == "succeeded"
    listed = m4v_json(live, "jobs", "list", "--status", "succeeded", "--limit", "100", "--json", key=live.bob)
    assert job_id in [j["id"] for j in listed["data"]]
    table = m4v(live, "jobs", "list", key=live.bob)
    assert job_id in table.stdout
    assert job_id not in m4v(live, "jobs", "list", "--limit", "100").stdout  # alice's list

    video = tmp_path / "d.mp4"
    assert m4v(live, "jobs", "download", job_id, "-o", str(video), key=live.bob).returncode == 0
    assert frames_of(video) == 9
    thumb = m4v(live, "jobs", "download", job_id, "--thumbnail", "-o", str(tmp_path / "t.jpg"), key=live.bob)
    assert thumb.returncode == 0 and (tmp_path / "t.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    missing = m4v(live, "jobs", "get", job_id)  # alice cannot see bob's job
    assert missing.returncode == 2 and "not_found" in missing.stderr


def test_jobs_cancel_and_ctrl_c_in_generate_cancel_the_job(live: LiveStack, tmp_path: Path) -> None:
    job_id = m4v(live, "generate", "long", "--no-wait", *SLOW).stdout.strip()
    assert m4v(live, "jobs", "cancel", job_id).returncode == 0
    waited = m4v(live, "jobs", "wait", job_id)
    assert waited.returncode == 1 and waited.stdout.strip() == f"{job_id} canceled"

    argv = [sys.executable, "-m", "m4v_cli", "generate", "long", "-o", str(tmp_path / "c.mp4"), *SLOW]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=cli_env(live), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "submitted" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    text = "".join(seen) + rest
    assert proc.returncode == 1, text[-3000:]
    assert "cancel requested" in text and "canceled" in text


def test_info_and_env(live: LiveStack) -> None:
    info = m4v_json(live, "info", "--json")
    assert info["presets"][0]["name"] == "tiny"
    text = m4v(live, "info").stdout
    assert "sizes 128x128" in text and "steps per stage [4, 4, 4] / [3, 3, 3]" in text
    env = m4v_json(live, "env", "--json")
    assert env["packages"]["m4v-serve"] and env["python"]
    assert env["settings"]["M4V_API_KEY"] == "<set>" and live.alice not in str(env)
