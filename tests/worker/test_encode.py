"""worker/encode.py: the MP4 is H.264 yuv420p, faststart, and decodes to the frames given."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
from PIL import Image

from worker.encode import encode_mp4, encode_thumbnail


def top_level_boxes(data: bytes) -> list[str]:
    """Names of the top-level ISO-BMFF boxes in file order."""
    names: list[str] = []
    pos = 0
    while pos + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:  # 64-bit largesize follows
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        names.append(name.decode("latin-1"))
        if size == 0:
            break
        pos += size
    return names


def gradient_frames(num: int = 9, height: int = 64, width: int = 96) -> np.ndarray:
    t = np.arange(num)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    shape = (num, height, width)
    r = np.broadcast_to(x * 255 // width, shape)
    g = np.broadcast_to(y * 255 // height, shape)
    b = np.broadcast_to((t * 25) % 256, shape)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)  # (F, H, W, 3)


def test_mp4_decodes_to_same_frame_count_size_codec_and_pixel_format() -> None:
    frames = gradient_frames()
    video = encode_mp4(frames, fps=8)
    with av.open(io.BytesIO(video.data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 9
    assert decoded[0].shape == (64, 96, 3)
    assert (video.width, video.height, video.frames, video.fps) == (96, 64, 9, 8)
    # lossy, but a smooth gradient survives closely
    assert np.abs(decoded[4].astype(int) - frames[4].astype(int)).mean() < 8


def test_mp4_has_moov_before_mdat_for_progressive_playback() -> None:
    names = top_level_boxes(encode_mp4(gradient_frames(), fps=24).data)
    assert "moov" in names and "mdat" in names
    assert names.index("moov") < names.index("mdat")


def test_single_frame_video_encodes() -> None:
    video = encode_mp4(gradient_frames(num=1), fps=24)
    with av.open(io.BytesIO(video.data)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1


def test_odd_sizes_and_wrong_dtype_are_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        encode_mp4(gradient_frames(height=63), fps=8)
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(gradient_frames().astype(np.float32), fps=8)


def test_thumbnail_is_a_jpeg_of_the_first_frame() -> None:
    frames = gradient_frames()
    image = Image.open(io.BytesIO(encode_thumbnail(frames)))
    assert image.format == "JPEG"
    assert image.size == (96, 64)
    assert np.abs(np.asarray(image).astype(int) - frames[0].astype(int)).mean() < 8
