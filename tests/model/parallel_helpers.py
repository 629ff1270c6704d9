"""Shared by the parallel tests (tests only): a small Mamba2, the relative error, and the rank entry points
of the multi-process tests. Each rank function runs in its own spawned process, joined to a gloo group by
model.parallel.group.run_ranks, and saves what the parent compares into `out` (a directory)."""

from __future__ import annotations

from pathlib import Path

import torch

from model.config import MambaConfig
from model.mamba2 import Mamba2
from model.parallel.relay import ProcessRelay
from model.parallel.scan_split import mixer_forward_shard

SMALL = MambaConfig(d_state=16, d_conv=4, expand=2, headdim=16, ngroups=2, chunk_size=32)
D_MODEL = 32
SEQ = 128


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: the issue's fp32 bound is 1e-5."""
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def mixer(seed: int = 0) -> Mamba2:
    torch.manual_seed(seed)
    m = Mamba2(D_MODEL, SMALL)
    with torch.no_grad():  # init leaves D = 1 and small dt: perturb so the skip and decay are exercised
        m.D.uniform_(0.5, 1.5)
        m.dt_bias.uniform_(-1.0, 1.0)
        m.norm.weight.uniform_(0.5, 1.5)
    return m


def scan_rank(rank: int, world: int, m: Mamba2, x: torch.Tensor, lengths: list[int], out: Path) -> None:
    """This rank's slice of the split scan, the state passed with send/recv; saves y and the end state."""
    torch.set_num_threads(1)
    seg = x.split(lengths, dim=1)[rank]
    relay = ProcessRelay()
    with torch.no_grad():
        y, end = mixer_forward_shard(m, seg, relay, None)
        ssm = relay.from_last(end.ssm)
    torch.save({"y": y, "ssm": ssm}, out / f"rank{rank}.pt")
