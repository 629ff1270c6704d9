"""Faster streaming VAE decode: spatial tiles decoded in batches, and decode overlapped with sampling.

BatchedStreamingDecoder has StreamingDecoder's API and output, but stacks up to `tile_batch` same-sized tiles
along the batch axis (tile_starts aligns the last tile to the edge, so every tile has one shape), one causal
cache per batch of tiles: a few large convolutions instead of many small ones. FrameGroupNorm normalises each
sample on its own, so batching tiles does not change the result beyond float rounding.
OverlappedSink runs a per-unit sink (decode + hand-off) on one background thread with its own CUDA stream,
so decoding unit k overlaps sampling unit k+1; calls stay in unit order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from model.vae import CausalVAE, StreamingDecoder, decode_in_tiles
from model.vae_blocks import CausalCache
from model.vae_geometry import tile_layout


class BatchedStreamingDecoder:
    def __init__(
        self, vae: CausalVAE, tile_batch: int, tile_px: int | None = None, frame_chunk: int | None = None
    ) -> None:
        if tile_batch < 1:
            raise ValueError(f"tile_batch {tile_batch} must be >= 1")
        self.vae = vae
        self.frame_chunk = frame_chunk
        self.cfg = vae.cfg if tile_px is None else dataclasses.replace(vae.cfg, tile_px=tile_px)
        self.tile_batch = tile_batch
        self.caches: dict[int, CausalCache] = {}  # one per batch of tiles
        self.frames_done = 0

    def _tiles(self, h: int, w: int) -> tuple[list[tuple[int, int]], int, int]:
        tile, _, ys, xs = tile_layout(self.cfg, h, w)
        return [(y, x) for y in ys for x in xs], min(tile, h), min(tile, w)

    @torch.no_grad()
    def decode_next(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 5 or latent.shape[2] != 1:
            raise ValueError(f"decode_next takes one latent frame (B, C, 1, h, w), got {tuple(latent.shape)}")
        z = self.vae.unscale(latent, first_index=int(self.frames_done > 0))
        tiles, th, tw = self._tiles(*z.shape[-2:])
        b = z.shape[0]
        pieces: dict[tuple[int, int], torch.Tensor] = {}
        for start in range(0, len(tiles), self.tile_batch):
            group = tiles[start : start + self.tile_batch]
            zt = torch.cat([z[..., y : y + th, x : x + tw] for y, x in group], dim=0)  # (g*B, C, 1, th, tw)
            cache = self.caches.setdefault(start, CausalCache(max_frames=self.frame_chunk))
            out = self.vae.decoder(zt, cache)  # (g*B, 3, n, ., .)
            pieces.update(zip(group, out.split(b, dim=0), strict=True))
        frames = decode_in_tiles(self.cfg, z, lambda _zt, pos: pieces[pos])
        self.frames_done += frames.shape[2]
        return frames.clamp(-1.0, 1.0)


def stream_decoder(
    vae: CausalVAE, tile_batch: int = 1, tile_px: int | None = None, frame_chunk: int | None = None
) -> StreamingDecoder | BatchedStreamingDecoder:
    """The streaming decoder for RuntimeOptions.vae_tile_batch (1: the reference StreamingDecoder),
    vae_tile_px (None: the VAE's own tile size) and vae_frame_chunk (None: whole latent frames)."""
    if tile_batch == 1:
        return vae.stream_decoder(tile_px, frame_chunk)
    return BatchedStreamingDecoder(vae, tile_batch, tile_px, frame_chunk)


Sink = Callable[[int, torch.Tensor], None]


class OverlappedSink:
    """Calls sink(unit, latent) on a background thread, in order; close() waits and re-raises its errors."""

    def __init__(self, sink: Sink, device: torch.device) -> None:
        self.sink = sink
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m4v-decode")
        self.futures: list[Future[None]] = []
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, unit: int, latent: torch.Tensor) -> None:
        for f in self.futures:  # fail fast: a decode error stops sampling at the next unit
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        latent = latent.clone()  # the sampler's tensor is not ours to keep
        ready = None
        if self.stream is not None:
            ready = torch.cuda.Event()
            ready.record()
        self.futures.append(self.pool.submit(self._run, unit, latent, ready))

    def _run(self, unit: int, latent: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        with torch.inference_mode():  # grad mode is per thread
            if self.stream is None or ready is None:
                self.sink(unit, latent)
                return
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(ready)
                latent.record_stream(self.stream)
                self.sink(unit, latent)
            self.stream.synchronize()

    def close(self) -> None:
        try:
            for f in self.futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
