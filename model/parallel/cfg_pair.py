"""One worker, two devices: the worker process is rank 0 of a CFG-parallel pair (model/parallel/cfg.py) and
a follower process, started here, runs every request on the second device in lockstep.

Requests reach the follower through a multiprocessing queue, so an idle pair waits outside the process
group (no collective times out while there is no work). Inside a request the ranks meet twice per step:
the velocity all_gather of CFG-parallel, and after the step one tiny all_reduce that says whether the
worker's progress callback raised (cancel, drain); then both ranks stop at the same step, and the pair is
ready for the next request. The follower exits when told to (close()) or when the worker process is gone.

The VAE decode is split too (split_decode, model/parallel/vae_tiles.py): each rank decodes its share of
every latent frame's tiles, and one all_gather per latent frame, on a process group of the decoder's own
(the decode may run on a side thread beside the sampler, overlap_decode), gives both ranks the whole frames;
rank 0's are the video. The decode needs no agreement of its own: the sampler hands a finished latent frame
to the decoder only after that unit's last step, so ranks that stop at the same step have decoded the same
latent frames, and generate() waits for the side thread's decodes before it returns or raises. The worker's
on_chunk runs on rank 0 only: an error it raises is held and joins the next step's agreement, so both
ranks stop there (raised after generate when no step followed), instead of rank 0 leaving alone.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.parallel.group import free_port, init_rank
from model.pipeline import VideoPipeline
from model.pipeline_types import (
    ChunkCallback,
    DecodedChunk,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    StepProgress,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairSpec:
    build: Callable[[str], VideoPipeline]  # the same pipeline on a given device; picklable (module-level)
    devices: tuple[str, str]  # rank 0 (this process), rank 1 (the follower)
    backend: str = "gloo"  # "nccl" for CUDA devices
    timeout_s: float = 600.0  # longest wait inside one collective (one sampler step, or a peer's failure)
    split_decode: bool = True  # VAE tiles over the two ranks (False: each rank decodes the whole video)


class _PeerStoppedError(Exception):
    """The other rank's progress callback raised: this rank stops at the same step."""


class _HeldChunks:
    """Rank 0's on_chunk with its first error held (later chunks are dropped): raising in the decode would
    stop rank 0 alone, while the follower waits in the next collective."""

    def __init__(self, on_chunk: ChunkCallback) -> None:
        self.on_chunk = on_chunk
        self.error: Exception | None = None

    def __call__(self, chunk: DecodedChunk) -> None:
        if self.error is None:
            try:
                self.on_chunk(chunk)
            except Exception as exc:  # raised by the step agreement (_agreed) or after generate
                self.error = exc


def _agreed(
    on_progress: ProgressCallback | None, device: torch.device, chunks: _HeldChunks | None = None
) -> ProgressCallback:
    """A progress callback both ranks call after every step: if it (or a held on_chunk) raised on any
    rank, all stop."""

    def call(progress: StepProgress) -> None:
        raised: BaseException | None = None
        if on_progress is not None:
            try:
                on_progress(progress)
            except BaseException as exc:  # re-raised below, after the peer has been told
                raised = exc
        if raised is None and chunks is not None:
            raised = chunks.error
        flag = torch.tensor([0 if raised is None else 1], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if raised is not None:
            raise raised
        if int(flag.item()):
            raise _PeerStoppedError

    return call


def _join(spec: PairSpec, rank: int, port: int) -> VideoPipeline:
    device = torch.device(spec.devices[rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_rank(spec.backend, rank, 2, port, spec.timeout_s)
    pipe = spec.build(spec.devices[rank])
    pipe.parallel_cfg()
    if spec.split_decode:  # a group of the decoder's own, made on both ranks at the same point
        pipe.parallel_vae(dist.new_group([0, 1], timeout=timedelta(seconds=spec.timeout_s)))
    return pipe


def _follow(spec: PairSpec, port: int, requests: Any, parent: int) -> None:
    """The follower's loop: each request from the queue, until None or until the worker process is gone."""
    pipe = _join(spec, 1, port)
    try:
        while os.getppid() == parent:
            try:
                req = requests.get(timeout=5.0)
            except queue.Empty:
                continue
            if req is None:
                return
            try:
                pipe.generate(req, _agreed(None, pipe.device))
            except _PeerStoppedError:
                log.info("follower stopped with the worker at the same step", extra={"seed": req.seed})
            except Exception:  # the follower's job boundary: rank 0 meets the same error and reports it
                log.exception("follower failed a request", extra={"seed": req.seed})
    finally:
        dist.destroy_process_group()


class CfgPair:
    """Stands in for the worker's VideoPipeline: generate() runs on both ranks; other attributes (device,
    weights_source, cfg, ...) are rank 0's pipeline's."""

    def __init__(self, spec: PairSpec) -> None:
        ctx = mp.get_context("spawn")
        port = free_port()
        self._requests = ctx.Queue()
        self._follower = ctx.Process(
            target=_follow,
            args=(spec, port, self._requests, os.getpid()),
            name="m4v-cfg-follower",
            daemon=True,
        )
        self._follower.start()
        self.pipe = _join(spec, 0, port)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def generate(
        self,
        req: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> GenerationResult:
        if not self._follower.is_alive():
            raise RuntimeError(f"the CFG-parallel follower process exited (code {self._follower.exitcode})")
        self._requests.put(req)
        chunks = None if on_chunk is None else _HeldChunks(on_chunk)
        result = self.pipe.generate(req, _agreed(on_progress, self.pipe.device, chunks), chunks)
        if chunks is not None and chunks.error is not None:  # held past the last step: no peer waits
            raise chunks.error
        return result

    def close(self) -> None:
        """Stop the follower and leave the process group."""
        self._requests.put(None)
        self._follower.join(timeout=60)
        dist.destroy_process_group()
