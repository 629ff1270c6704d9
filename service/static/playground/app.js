// m4v playground: a plain client of the public API (POST /generate, GET /jobs/{id}/events, DELETE /jobs/{id}).
// The API key lives in sessionStorage (this tab only) and travels in the Authorization header, never in a URL.
// The event stream is read with fetch() rather than EventSource, which cannot send that header.
"use strict";

const API = new URL("..", location.href).href.replace(/\/$/, ""); // the page is served at <api>/playground/
const KEY_STORE = "m4v.apiKey";
const JOBS_STORE = "m4v.jobs";
const MAX_JOBS = 20;
const FINISHED = new Set(["succeeded", "failed", "canceled", "timed_out", "expired"]);

const $ = (id) => document.getElementById(id);
let options = null;
let current = null; // {id, job, abort: AbortController}

// ---------- API ----------
function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(method, path, body) {
  const headers = { ...authHeaders(), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = data.error || {};
    throw Object.assign(new Error(`${res.status} ${err.message || res.statusText}`), { status: res.status });
  }
  return data;
}

// Server-sent events over fetch: yields {event, data, id}; resumes with Last-Event-ID after a dropped
// connection and returns after the "done" event.
async function* jobEvents(id, signal) {
  let last = "0-0";
  for (;;) {
    let res;
    try {
      res = await fetch(`${API}/jobs/${id}/events`, {
        headers: { ...authHeaders(), Accept: "text/event-stream", "Last-Event-ID": last }, signal,
      });
    } catch (e) {
      if (signal.aborted) return;
      await sleep(1000);
      continue;
    }
    if (!res.ok) throw new Error(`events: ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", pendingCR = "", ev = { event: "message", data: [], id: null };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let text = pendingCR + value;
        pendingCR = text.endsWith("\r") ? "\r" : "";
        if (pendingCR) text = text.slice(0, -1);
        buf += text.replace(/\r\n?/g, "\n");
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (ev.data.length) {
              const out = { event: ev.event, data: JSON.parse(ev.data.join("\n")), id: ev.id };
              if (ev.id) last = ev.id;
              yield out;
              if (out.event === "done") return;
            }
            ev = { event: "message", data: [], id: null };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") ev.event = val;
            else if (field === "data") ev.data.push(val);
            else if (field === "id") ev.id = val;
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await sleep(500); // the connection ended before "done": reconnect after the last event seen
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------- recent jobs (this tab) ----------
function loadJobs() {
  try { return JSON.parse(sessionStorage.getItem(JOBS_STORE)) || []; } catch { return []; }
}

function saveJob(job) {
  const jobs = loadJobs().filter((j) => j.id !== job.id);
  const old = loadJobs().find((j) => j.id === job.id);
  jobs.unshift({
    id: job.id,
    prompt: (job.request && job.request.prompt) || (old && old.prompt) || "",
    status: job.status,
    created_at: job.created_at || (old && old.created_at),
  });
  sessionStorage.setItem(JOBS_STORE, JSON.stringify(jobs.slice(0, MAX_JOBS)));
  renderJobs();
}

function setListedStatus(id, status) {
  const jobs = loadJobs();
  const j = jobs.find((x) => x.id === id);
  if (j && j.status !== status) {
    j.status = status;
    sessionStorage.setItem(JOBS_STORE, JSON.stringify(jobs));
    renderJobs();
  }
}

function renderJobs() {
  const ul = $("jobs");
  ul.replaceChildren();
  for (const j of loadJobs()) {
    const li = document.createElement("li");
    li.dataset.jobId = j.id;
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = j.prompt || j.id;
    a.addEventListener("click", (e) => { e.preventDefault(); openJob(j.id); });
    const s = document.createElement("span");
    s.className = `status ${j.status}`;
    s.textContent = j.status;
    li.append(a, " ", s);
    if (current && current.id === j.id) li.classList.add("selected");
    ul.append(li);
  }
}

async function refreshListed() {
  for (const j of loadJobs()) {
    if (FINISHED.has(j.status) || (current && current.id === j.id)) continue;
    try { setListedStatus(j.id, (await api("GET", `/jobs/${j.id}`)).status); } catch (e) {
      if (e.status === 404) setListedStatus(j.id, "expired");
    }
  }
}

// ---------- one job ----------
function fmtEta(s) {
  if (s === null || s === undefined) return "ETA unknown yet";
  if (s < 90) return `ETA ${Math.round(s)} s`;
  return `ETA ${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function setStatus(status) {
  if ($("job-status").textContent !== status) {
    $("job-status").textContent = status;
    $("job-status").className = `status ${status}`;
  }
  $("cancel").disabled = FINISHED.has(status);
  if (current) { current.status = status; setListedStatus(current.id, status); }
}

function showQueued(job) {
  const pos = job.queue_position;
  const ahead = pos === null || pos === undefined ? "" : pos === 0 ? "next in line" : `${pos} job(s) ahead`;
  $("job-detail").textContent = `Queued: ${ahead} · ${fmtEta(job.eta_s)}`;
}

function showProgress(p) {
  const stages = options ? options.first_frame_steps.length : "?";
  $("job-progress").value = p.percent;
  $("job-detail").textContent =
    `${p.percent.toFixed(1)}% · latent frame ${Math.min(p.units_done + 1, p.units_total)}/${p.units_total}` +
    ` · stage ${p.stage + 1}/${stages} · step ${p.step}/${p.steps_total} · ${fmtEta(p.eta_s)}`;
}

function showPreview(url) {
  const video = $("preview");
  if (current.previewUrl) return; // hls.js follows the growing (EVENT) playlist by itself
  current.previewUrl = url;
  video.dataset.playlist = url;
  if (window.Hls && Hls.isSupported()) { // hls.js (MSE) first: the same player in every desktop browser
    const hls = new Hls({ liveSyncDurationCount: 1 });
    current.hls = hls;
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) { // iOS Safari: native HLS, no MSE
    video.src = url;
  } else {
    $("job-error").textContent = "This browser cannot play HLS previews.";
    return;
  }
  video.play().catch(() => {});
}

function showDone(job) {
  setStatus(job.status);
  if (current && current.hls && job.status !== "succeeded") current.hls.stopLoad(); // no ENDLIST will come
  if (job.status === "succeeded") $("job-progress").value = 100;
  const r = job.result;
  if (r && r.video_url) {
    $("final-box").hidden = false;
    $("final").src = r.video_url;
    $("download").href = r.video_url;
    $("final-caption").textContent = r.partial
      ? `Partial video: ${r.frames} of ${job.spec.num_frames} frames at ${r.fps} fps`
      : `Video: ${r.frames} frames at ${r.fps} fps, ${r.width}x${r.height}, seed ${r.seed}`;
  }
  if (job.error) $("job-error").textContent = `${job.error.type}: ${job.error.message}`;
  $("job-detail").textContent = job.status === "succeeded"
    ? `Done in ${job.metrics && job.metrics.total_s ? job.metrics.total_s.toFixed(1) + " s" : "?"}`
    : `Ended ${job.status}`;
}

function resetView(job) {
  if (current) {
    current.abort.abort();
    if (current.hls) current.hls.destroy();
  }
  for (const v of [$("preview"), $("final")]) { v.removeAttribute("src"); delete v.dataset.playlist; v.load(); }
  $("final-box").hidden = true;
  $("download").removeAttribute("href");
  $("job-error").textContent = "";
  $("job-progress").value = 0;
  $("job-detail").textContent = "";
  $("job").hidden = false;
  $("job-title").textContent = `Job ${job.id.slice(0, 8)}`;
  $("job-prompt").textContent = job.request ? job.request.prompt : "";
  current = { id: job.id, status: job.status, abort: new AbortController(), previewUrl: null, hls: null };
  $("job").dataset.jobId = job.id;
  setStatus(job.status);
  renderJobs();
}

async function follow(job) {
  resetView(job);
  const mine = current;
  if (job.status === "queued") showQueued(job);
  const poll = pollQueued(mine);
  try {
    for await (const ev of jobEvents(job.id, mine.abort.signal)) {
      if (current !== mine) return;
      if (ev.event === "status") setStatus(ev.data.status);
      else if (ev.event === "progress") { if (mine.status === "queued") setStatus("running"); showProgress(ev.data); }
      else if (ev.event === "preview") showPreview(ev.data.url);
      else if (ev.event === "done") showDone(ev.data);
    }
  } catch (e) {
    if (current === mine) $("job-error").textContent = String(e.message || e);
  } finally {
    mine.abort.abort();
    await poll;
  }
}

// Queue position and ETA of a queued job are not events: read them from GET /jobs/{id} while it waits.
async function pollQueued(mine) {
  while (!mine.abort.signal.aborted) {
    await sleep(2000);
    if (mine.abort.signal.aborted || current !== mine || mine.status !== "queued") continue;
    try {
      const job = await api("GET", `/jobs/${mine.id}`);
      if (job.status === "queued" && current === mine && mine.status === "queued") showQueued(job);
    } catch { /* the event stream reports failures */ }
  }
}

async function openJob(id) {
  try {
    const job = await api("GET", `/jobs/${id}`);
    saveJob(job);
    follow(job);
  } catch (e) {
    $("form-error").textContent = `job ${id.slice(0, 8)}: ${e.message}`;
    if (e.status === 404) setListedStatus(id, "expired");
  }
}

// ---------- form ----------
function steps(id) {
  const v = $(id).value.trim();
  return v ? v.split(/[\s,]+/).map(Number) : undefined;
}

function requestBody() {
  const body = { prompt: $("prompt").value.trim(), priority: $("priority").value };
  const neg = $("negative_prompt").value.trim();
  if (neg) body.negative_prompt = neg;
  const [w, h] = $("size").value.split("x").map(Number);
  Object.assign(body, { width: w, height: h, num_frames: Number($("num_frames").value) });
  if ($("fps").value) body.fps = Number($("fps").value);
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  const first = steps("first_frame_steps"), later = steps("later_frame_steps");
  if (first) body.first_frame_steps = first;
  if (later) body.later_frame_steps = later;
  return body;
}

async function submit(e) {
  e.preventDefault();
  $("form-error").textContent = "";
  $("submit").disabled = true;
  try {
    const job = await api("POST", "/generate", requestBody());
    saveJob(job);
    follow(job);
  } catch (err) {
    $("form-error").textContent = err.message;
    if (err.status === 401) $("key-form").hidden = false;
  } finally {
    $("submit").disabled = false;
  }
}

async function cancel() {
  if (!current) return;
  $("cancel").disabled = true;
  try {
    const job = await api("DELETE", `/jobs/${current.id}`);
    if (FINISHED.has(job.status)) setStatus(job.status);
    else $("job-detail").textContent += " · stopping at the next step";
  } catch (e) {
    $("job-error").textContent = e.message;
    $("cancel").disabled = false;
  }
}

function fillOptions(o) {
  options = o;
  $("preset").textContent = `preset ${o.preset}`;
  $("prompt").maxLength = o.max_prompt_chars;
  $("size").replaceChildren(...o.resolutions.map(({ width, height }) => new Option(`${width}x${height}`)));
  const frames = [];
  for (let n = 1; n <= o.max_frames; n += o.frame_multiple) frames.push(n);
  $("num_frames").replaceChildren(...frames.map((n) => new Option(`${n}`, `${n}`, false, n === o.default_frames)));
  $("fps").value = o.default_fps;
  $("first_frame_steps").placeholder = o.first_frame_steps.join(", ");
  $("later_frame_steps").placeholder = o.later_frame_steps.join(", ");
  $("key-form").hidden = o.auth_mode !== "keys";
  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
}

async function init() {
  $("generate-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    $("form-error").textContent = "";
  });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); $("api-key").value = ""; });
  renderJobs();
  try {
    fillOptions(await api("GET", "/playground/options"));
  } catch (e) {
    $("form-error").textContent = `options: ${e.message}`;
  }
  setInterval(refreshListed, 3000);
  document.body.dataset.ready = "true";
}

init();
