"""Starting one process per rank on this host: the environment, the process group, the launcher.

NVLink multicast stays off in NCCL and PyTorch's symmetric memory (NCCL_NVLS_ENABLE=0,
TORCH_SYMM_MEM_DISABLE_MULTICAST=1): it is set in every rank's own environment before its process group
starts, and in any environment built for a child process (child_env).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

MULTICAST_OFF: dict[str, str] = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process: `base` (default os.environ) with multicast off."""
    env = dict(os.environ if base is None else base)
    env.update(MULTICAST_OFF)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_rank(backend: str, rank: int, world: int, port: int, timeout_s: float = 120.0) -> None:
    """Join the localhost process group as `rank` of `world` ("gloo" on CPU, "nccl" on GPUs)."""
    os.environ.update(MULTICAST_OFF)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )


def _rank_main(rank: int, fn: Callable[..., None], world: int, backend: str, port: int, args: Any) -> None:
    init_rank(backend, rank, world, port)
    try:
        fn(rank, world, *args)
        # every rank past its last collective before any tears the group down: a rank that destroyed the
        # group while a peer still read its last all_gather aborted that peer in CI ("terminate called
        # without an active exception", SIGABRT). Not after a failure: the peers may never reach it.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., None], world: int, args: tuple[Any, ...] = (), backend: str = "gloo") -> None:
    """fn(rank, world, *args) in `world` fresh processes joined in one process group; returns when all
    have finished, raises if any failed. fn must be importable (a module-level function)."""
    port = free_port()
    mp.start_processes(_rank_main, args=(fn, world, backend, port, args), nprocs=world, start_method="spawn")
