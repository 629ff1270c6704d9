"""Frames to a web-playable MP4 (H.264, yuv420p, moov atom first) and a JPEG thumbnail. No torch."""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
from PIL import Image

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedVideo:
    data: bytes
    width: int
    height: int
    frames: int
    fps: int


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or str(frames.dtype) != "uint8":
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        # yuv420p subsamples chroma 2x2; odd sizes would be cropped or rejected by the encoder.
        raise ValueError(f"yuv420p needs even width and height, got {width}x{height}")


def encode_mp4(frames: np.ndarray, fps: int, crf: int = 20, preset: str = "medium") -> EncodedVideo:
    """Encode (F, H, W, 3) uint8 RGB frames as H.264 yuv420p MP4 with +faststart (moov before mdat)."""
    _check_frames(frames)
    num, height, width, _ = frames.shape
    # faststart rewrites the file after the last packet, so it needs a real seekable file.
    with tempfile.TemporaryDirectory(prefix="m4v-encode-") as tmp:
        path = Path(tmp) / "video.mp4"
        with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for rgb in frames:  # rgb: (H, W, 3)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():  # flush delayed frames
                container.mux(packet)
        data = path.read_bytes()
    log.debug("encoded mp4", extra={"frames": num, "bytes": len(data)})
    return EncodedVideo(data=data, width=width, height=height, frames=num, fps=fps)


def encode_thumbnail(frames: np.ndarray, quality: int = 85) -> bytes:
    """JPEG of the first frame (what players show before playback)."""
    _check_frames(frames)
    buf = io.BytesIO()
    Image.fromarray(frames[0]).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
