"""Streaming previews: each finished unit (latent frame) becomes an HLS segment in S3 while the job runs.

Why per-unit MPEG-TS segments + an HLS playlist rather than a growing fragmented MP4: S3 objects cannot be
appended to, so a "growing" fMP4 means re-uploading every byte so far after each unit (quadratic traffic for
a 241-frame video), while a segment is encoded and uploaded exactly once. Each segment starts with an IDR
frame and carries timestamps that continue the previous one, so the playlist plays as one video; HLS is
what browsers play natively (Safari) or with hls.js, and ffmpeg/PyAV read it too.

S3 layout, next to the final video (videos/YYYY/MM/DD/<id>.mp4):
  previews/YYYY/MM/DD/<id>/seg-00000.ts ...   one segment per unit
  previews/YYYY/MM/DD/<id>/index.m3u8         rewritten after every segment
The bucket is private, so relative segment URIs would not resolve: the playlist lists presigned segment
URLs (valid presign_expiry_s), and the `preview` event carries a presigned URL of the playlist itself.

Every preview is best effort: a failed encode or upload is logged and skipped, never failing the job.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av

from worker.job_view import client_view
from worker.storage import StorageError

if TYPE_CHECKING:
    import numpy as np

    from m4v_core import JobRecord, JobStore
    from m4v_core.webhooks import WebhookSender
    from model.pipeline_types import DecodedChunk
    from worker.context import JobContext
    from worker.storage import Storage

log = logging.getLogger(__name__)

TS_CLOCK = 90_000  # MPEG-TS timestamps are in 1/90000 s
SEGMENT_CRF = 23  # previews are for watching progress; the final MP4 keeps crf 20


def preview_prefix(job_id: str, created_at: datetime) -> str:
    """previews/YYYY/MM/DD/<id>/ (dated like the video key, by the job's creation)."""
    return f"previews/{created_at:%Y/%m/%d}/{job_id}/"


def encode_ts_segment(frames: np.ndarray, fps: int, first_frame: int) -> bytes:
    """(n, H, W, 3) uint8 -> one MPEG-TS segment of H.264 starting with an IDR frame; its timestamps start
    at first_frame / fps so consecutive segments play as one continuous video."""
    buf = io.BytesIO()
    _, height, width, _ = frames.shape
    with av.open(buf, mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # zerolatency: no lookahead or B-frames, so the segment is complete the moment its frames are in
        stream.options = {"crf": str(SEGMENT_CRF), "preset": "veryfast", "tune": "zerolatency"}
        stream.codec_context.time_base = Fraction(1, fps)
        for i, rgb in enumerate(frames):  # rgb: (H, W, 3)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = first_frame + i
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


@dataclass(frozen=True)
class Segment:
    key: str
    frames: int
    duration_s: float


def hls_playlist(segment_urls: list[str], segments: list[Segment], ended: bool) -> str:
    """An HLS media playlist; EVENT while segments are still being added, ENDLIST once the video is done."""
    target = max(1, math.ceil(max((s.duration_s for s in segments), default=1.0)))
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:0"]
    lines.append("#EXT-X-PLAYLIST-TYPE:EVENT" if not ended else "#EXT-X-PLAYLIST-TYPE:VOD")
    for url, seg in zip(segment_urls, segments, strict=True):
        lines += [f"#EXTINF:{seg.duration_s:.6f},", url]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


@dataclass
class PreviewPublisher:
    """on_chunk target of one job: segment -> S3, playlist -> S3, `preview` event (+ progress webhook)."""

    job: JobRecord
    store: JobStore
    storage: Storage
    expiry_s: int
    webhooks: WebhookSender | None = None
    segments: list[Segment] = field(default_factory=list)
    frames_done: int = 0
    delays_s: list[float] = field(default_factory=list)  # unit finished -> preview event, per unit

    @classmethod
    def for_job(cls, ctx: JobContext, job: JobRecord) -> PreviewPublisher | None:
        """None when previews are off (M4V_PREVIEWS=false)."""
        if not ctx.settings.previews:
            return None
        return cls(job, ctx.store, ctx.storage, ctx.settings.presign_expiry_s, ctx.webhooks)

    @property
    def prefix(self) -> str:
        return preview_prefix(self.job.id, self.job.created_at)

    @property
    def playlist_key(self) -> str:
        return f"{self.prefix}index.m3u8"

    def __call__(self, chunk: DecodedChunk) -> None:
        finished = time.perf_counter()
        try:
            self._publish(chunk, finished)
        except (StorageError, av.FFmpegError, ValueError):
            log.warning("preview skipped", extra={"job_id": self.job.id, "unit": chunk.unit}, exc_info=True)

    def _publish(self, chunk: DecodedChunk, finished: float) -> None:
        fps = self.job.spec.fps
        n = int(chunk.frames.shape[0])
        key = f"{self.prefix}seg-{chunk.unit:05d}.ts"
        self.storage.upload(key, encode_ts_segment(chunk.frames, fps, chunk.first_frame), "video/mp2t")
        self.segments.append(Segment(key=key, frames=n, duration_s=n / fps))
        self.frames_done = chunk.first_frame + n
        ended = self.frames_done >= self.job.spec.num_frames
        self._upload_playlist(ended)
        data = self._event_data(chunk, ended)
        data["delay_s"] = round(time.perf_counter() - finished, 4)
        self.store.append_event(self.job.id, "preview", data)
        self.delays_s.append(data["delay_s"])
        if self.webhooks is not None:
            self.webhooks.submit(self.job, "progress", data=self._webhook_data(data))
        log.debug("preview published", extra={"job_id": self.job.id, "unit": chunk.unit, **data})

    def _upload_playlist(self, ended: bool) -> None:
        urls = [self.storage.presign_get(s.key, self.expiry_s) for s in self.segments]
        text = hls_playlist(urls, self.segments, ended)
        self.storage.upload(self.playlist_key, text.encode(), "application/vnd.apple.mpegurl")

    def _event_data(self, chunk: DecodedChunk, ended: bool) -> dict[str, Any]:
        return {
            "job_id": self.job.id,
            "unit": chunk.unit,
            "units_done": chunk.unit + 1,
            "frames_done": self.frames_done,
            "frames_total": self.job.spec.num_frames,
            "format": "hls",
            "url": self.storage.presign_get(self.playlist_key, self.expiry_s),
            "segment_url": self.storage.presign_get(self.segments[-1].key, self.expiry_s),
            "ended": ended,
            "at": datetime.now(UTC).isoformat(),
        }

    def _webhook_data(self, preview: dict[str, Any]) -> dict[str, Any]:
        return {**client_view(self.job), "preview": preview}
