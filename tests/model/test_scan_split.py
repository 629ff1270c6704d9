"""The Mamba2 scan split along the sequence (model/parallel/scan_split.py), all ranks in one process: the
concatenated rank outputs and the final state equal the unsplit mixer, wherever the splits fall."""

from __future__ import annotations

import pytest
import torch

from model.mamba2 import Mamba2, SSMState
from model.parallel.relay import SequentialRelay, Step
from model.parallel.scan_split import split_scan
from tests.model.parallel_helpers import D_MODEL, SEQ, mixer, relative


def start_state(m: Mamba2, batch: int) -> SSMState:
    g = torch.Generator().manual_seed(1)
    s = m.initial_state(batch, torch.device("cpu"), torch.float32)
    return SSMState(conv=torch.randn(s.conv.shape, generator=g), ssm=torch.randn(s.ssm.shape, generator=g))


SPLITS = {
    "2 ranks on a chunk boundary": [64, 64],
    "4 ranks on chunk boundaries": [32, 32, 32, 32],
    "2 ranks off the boundary": [45, 83],
    "3 ranks off the boundaries": [17, 50, 61],
    "4 ranks, one shorter than the conv": [2, 61, 1, 64],
}


@pytest.mark.parametrize("lengths", list(SPLITS.values()), ids=list(SPLITS))
@pytest.mark.parametrize("with_state", [False, True], ids=["from zeros", "from a state"])
def test_split_scan_equals_unsplit(lengths: list[int], with_state: bool) -> None:
    m = mixer()
    x = torch.randn(2, SEQ, D_MODEL, generator=torch.Generator().manual_seed(2))
    state = start_state(m, 2) if with_state else None
    want, want_state = m(x, state=state, return_state=True)
    assert want_state is not None
    got, got_state = split_scan(m, x, lengths, state)
    assert relative(got, want) <= 1e-5
    assert relative(got_state.ssm, want_state.ssm) <= 1e-5
    assert torch.equal(got_state.conv, want_state.conv)


class _DroppingRelay(SequentialRelay):
    """A wrong hand-off: every rank starts from the caller's state, as if nothing were passed on."""

    def relay(self, start: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        super().relay(start, step)
        return start, step(start)


def test_dropping_the_handed_off_state_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("model.parallel.scan_split.SequentialRelay", _DroppingRelay)
    m = mixer()
    x = torch.randn(2, SEQ, D_MODEL, generator=torch.Generator().manual_seed(2))
    want, _ = m(x)
    got, _ = split_scan(m, x, [45, 83])
    assert relative(got[:, :45], want[:, :45]) <= 1e-5  # the first rank needs nothing handed to it
    assert relative(got[:, 45:], want[:, 45:]) > 1e-3


def test_empty_rank_is_refused() -> None:
    m = mixer()
    with pytest.raises(ValueError, match="at least one token"):
        split_scan(m, torch.randn(1, 8, D_MODEL), [8, 0])
