"""The split Mamba2 scan over real processes (gloo, one process per rank, state passed with send/recv)
equals the unsplit mixer; the end state reaches every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.parallel.group import run_ranks
from tests.model.parallel_helpers import D_MODEL, SEQ, mixer, relative, scan_rank


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lengths", [[45, 83], [32, 32, 32, 32], [17, 50, 2, 59]], ids=str)
def test_gloo_split_scan_equals_unsplit(lengths: list[int], tmp_path: Path) -> None:
    m = mixer()
    x = torch.randn(2, SEQ, D_MODEL, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, want_state = m(x, return_state=True)
    assert want_state is not None
    run_ranks(scan_rank, len(lengths), (m, x, lengths, tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(len(lengths))]
    got = torch.cat([r["y"] for r in ranks], dim=1)
    assert relative(got, want) <= 1e-5
    for r in ranks:
        assert relative(r["ssm"], want_state.ssm) <= 1e-5
