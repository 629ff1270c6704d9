"""CFG-parallel x sequence-parallel: 2 * S ranks as a 2 x S grid. Rank c * S + s runs CFG half c (0 cond,
1 uncond) and token run s of the current frame; the S ranks of one half split its frame
(model/parallel/seq.py) and the two ranks of one run exchange velocities (model/parallel/cfg.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from model.network import M4VNetwork
from model.parallel.cfg import CfgParallelDenoiser
from model.parallel.seq import SeqAttention, SeqParallelDenoiser


@dataclass(frozen=True)
class MeshGroups:
    cfg: dist.ProcessGroup  # this rank and the rank holding the same token run of the other half
    seq: dist.ProcessGroup  # the S ranks of this rank's CFG half


def mesh_groups(seq: int) -> MeshGroups:
    """Every rank of the default group must call this (each new_group is collective), with the same seq."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if world != 2 * seq:
        raise ValueError(f"a 2 x {seq} mesh needs {2 * seq} ranks, the default group has {world}")
    seq_groups = [dist.new_group([c * seq + s for s in range(seq)]) for c in range(2)]
    cfg_groups = [dist.new_group([s, seq + s]) for s in range(seq)]
    return MeshGroups(cfg=cfg_groups[rank % seq], seq=seq_groups[rank // seq])


def cfg_seq_denoiser(net: M4VNetwork, seq: int, attention: SeqAttention = "gather_kv") -> CfgParallelDenoiser:
    """The sampler's Denoiser on this rank of the 2 x seq mesh over the default group."""
    groups = mesh_groups(seq)
    return CfgParallelDenoiser(SeqParallelDenoiser(net, groups.seq, attention), groups.cfg)
