"""One optimisation step of the network phase, eager or as one CUDA graph.

A step draws a batch from its source (``next(n, dropout) -> (latents, caption rows)``), computes the flow loss
(model/train/flow_loss.py), back-propagates, clips the gradient norm, runs fused AdamW and updates the EMA.
On the tiny preset the step is made of ~19,000 small kernels whose launches cost the host about as long as
the GPU needs for them. With ``graph=True`` the whole step, batch draw included, is captured
once with ``torch.cuda.graph`` after a few eager warm-up steps on a side stream (cuBLAS workspaces, Triton
autotuning, the optimizer's state and torch.compile happen there) and then replayed: one launch per step, no
Python. On an H100 that leaves the GPU's own work as the bound (docs/PERF.md): fusing it is the next step.

What a capture needs, and how it is met:
- static shapes: ``unit_layout="all"`` (every group has a fixed unit, see flow_loss), so every step has the
  same (stage, unit) sequence and the same tensor shapes; or ``"cycle"``, whose shapes repeat every
  ``phases`` (latent frames) steps: one graph per phase, all in one memory pool (they replay one at a time),
  each warmed up eagerly before the captures;
- random numbers from the default CUDA generator (the one a capture registers, so each replay draws fresh
  numbers): the source and the noise both use it;
- no host synchronisation in the step: the learning rate is a device tensor that the host fills before a
  replay (warm-up), clipping and AdamW are the foreach/fused kernels, the EMA is one multi-tensor lerp;
- gradients allocated inside the capture (zero_grad(set_to_none=True) first), so every replay writes them
  into the same memory that AdamW reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from model.config import ModelConfig
from model.network import M4VNetwork
from model.train.common import autocast
from model.train.flow_loss import NetTrainConfig, flow_loss
from model.train.text_cache import TextCache

log = logging.getLogger(__name__)

Losses = dict[str, torch.Tensor]


class BatchSource(Protocol):
    def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]: ...


def warmup_factor(step: int, warmup: int) -> float:
    """Linear learning-rate warm-up over ``warmup`` steps, then 1."""
    return min(1.0, (step + 1) / max(warmup, 1))


def step_generator(device: torch.device, seed: int, graph: bool) -> torch.Generator:
    """The device generator of a step: the default CUDA generator when the step is a graph (a capture
    registers only that one, so replays advance it), else a private one."""
    if graph:
        gen = torch.cuda.default_generators[device.index if device.index is not None else 0]
    else:
        gen = torch.Generator(device)
    return gen.manual_seed(seed)


class EMA:
    """Exponential moving average of the weights (what gets shipped), with a warm-up.

    Update n (0-based) moves the shadow by ``1 - decay_n`` towards the live weights, decay_n =
    min(decay, (1 + n) / (10 + n)). Without the warm-up the shadow of a run from a fresh initialisation is
    still ``decay ** n`` its random initial weights (0.998 ** 621 = 29% after run 5's 621 steps) plus the
    early, barely trained ones: the shipped network then scores far worse than the one that was trained. The
    warm-up keeps 2e-20 of the initial weights after 621 updates and reaches the full decay after ~4,500.

    The weight ``1 - decay_n`` is a device tensor that the host fills before each step (``set_update``), so a
    replayed CUDA graph reads the current one, like the learning rate.
    """

    def __init__(self, net: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = decay, warmup
        self.shadow = {k: v.detach().clone().float() for k, v in net.state_dict().items()}
        device = next(iter(self.shadow.values())).device if self.shadow else torch.device("cpu")
        self.weight = torch.tensor(1.0 - self.decay_at(0), device=device)  # of the next update

    def decay_at(self, n: int) -> float:
        """Decay of update n (0-based)."""
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    def set_update(self, n: int) -> None:
        """The next update is update n: a device-side write, no sync; graph replays read it."""
        self.weight.fill_(1.0 - self.decay_at(n))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """shadow += weight * (live - shadow), as three multi-tensor kernels (a loop would launch one kernel
        per tensor; the weight is a tensor, so nothing is read back to the host)."""
        state = net.state_dict()
        names = [k for k, v in state.items() if v.is_floating_point()]
        live = [state[k].float() for k in names]  # a no-op view for the fp32 weights training uses
        shadow = [self.shadow[k] for k in names]
        diff = torch._foreach_sub(live, shadow)
        torch._foreach_mul_(diff, self.weight)
        torch._foreach_add_(shadow, diff)

    def copy_to(self, net: nn.Module) -> None:
        net.load_state_dict(self.shadow)


class TrainStep:
    """Call it to take one step; returns (losses, steps taken) — the first graphed call takes the warm-up
    steps plus one replay. ``losses`` are device tensors (static buffers when graphed: read them before
    the next call)."""

    def __init__(
        self,
        net: M4VNetwork,
        source: BatchSource,
        cache: TextCache,
        cfg: ModelConfig,
        tc: NetTrainConfig,
        device: torch.device,
        g_dev: torch.Generator,
        g_unit: torch.Generator,
        graph_warmup: int = 3,
        phases: int = 1,
    ) -> None:
        """phases: latent frames of the training clips (unit_layout "cycle" repeats its shapes after them)."""
        self.graph = tc.cuda_graph
        if self.graph and (device.type != "cuda" or not tc.static_shapes):
            raise ValueError(
                "a CUDA-graph step needs a CUDA device and unit_layout 'all' or 'cycle' (static shapes)"
            )
        self.phases = phases if tc.unit_layout == "cycle" else 1
        self.net, self.tc, self.device = net, tc, device
        lr: float | torch.Tensor = torch.tensor(tc.lr, device=device) if self.graph else tc.lr
        fused = device.type == "cuda"  # one multi-tensor kernel per step instead of several per parameter
        self.opt = torch.optim.AdamW(
            net.parameters(),
            lr=lr,
            weight_decay=0.01,
            betas=(0.9, 0.99),
            fused=fused,
            capturable=self.graph,
        )
        self.ema = EMA(net, tc.ema_decay)
        self.taken = 0
        self.failed: str | None = None  # why the capture was given up (the step then runs eagerly)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}  # per phase
        self._static: dict[int, Losses] = {}
        self._warmup = max(graph_warmup, self.phases)  # every phase's shapes run eagerly before any capture

        def eager(phase: int) -> Losses:
            latents, rows = source.next(tc.batch, tc.text_dropout)
            if self.graph and tc.unit_layout == "cycle" and self.phases % latents.shape[2]:
                # graph p must train the same units at every replay: phases a multiple of the frames
                raise ValueError(f"phases {self.phases}: not a multiple of {latents.shape[2]} frames")
            with autocast(device):
                losses = flow_loss(net, latents, rows, cache, cfg, tc, g_dev, g_unit, phase)
            self.opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            self.opt.step()
            self.ema.update(net)
            return losses

        self._eager: Callable[[int], Losses] = eager

    def _set_lr(self) -> None:
        """The learning rate and the EMA weight of step ``self.taken`` (both warm up)."""
        self.ema.set_update(self.taken)
        lr = self.tc.lr * warmup_factor(self.taken, self.tc.warmup)
        for group in self.opt.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # a device-side write, no sync; replays read it
            else:
                group["lr"] = lr

    def __call__(self) -> tuple[Losses, int]:
        if not self.graph:
            self._set_lr()
            self.taken += 1
            return self._eager(self.taken - 1), 1
        began = self.taken
        if not self._graphs:
            try:
                self._capture()
            except Exception as e:  # noqa: BLE001 - any capture failure: train on eagerly, say why once
                log.error(
                    "CUDA graph capture of the training step failed; steps run eagerly: %s: %s",
                    type(e).__name__,
                    e,
                )
                self.graph, self._graphs = False, {}
                self.failed = f"{type(e).__name__}: {e}"
                losses, _ = self()
                return losses, self.taken - began
        phase = self.taken % self.phases
        self._set_lr()
        self._graphs[phase].replay()
        self.taken += 1
        return self._static[phase], self.taken - began

    def _capture(self) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self._warmup):
                self._set_lr()
                self._eager(self.taken)
                self.taken += 1
        torch.cuda.current_stream(self.device).wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        for phase in range(self.phases):  # recording runs nothing: weights stay where the warm-up left them
            graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph, pool=pool):
                self._static[phase] = self._eager(phase)
            self._graphs[phase] = graph
