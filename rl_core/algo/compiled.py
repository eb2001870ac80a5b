"""The PPO loss through ``torch.compile`` (``machine.compile=true``), with an eager fallback."""

from __future__ import annotations

import logging

import torch
from torch import nn

from collections.abc import Callable

# a loss of (model, minibatch) -> (total, terms), as rl_core.algo.ppo.PPOLoss
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]

log = logging.getLogger(__name__)


class CompiledLoss:
    """``loss`` through ``torch.compile``: inductor fuses the forward, the loss terms and their backward
    into C++ kernels, one graph per minibatch shape (``dynamic=False``: the shapes of a run are fixed).

    The first call of each shape also runs a backward, so that a compile failure of either graph (no C++
    compiler, an unsupported platform) shows there; it then warns once and the run goes on in eager mode.
    Shapes differ within a run when ``num_mini_batch`` does not divide the samplers.
    """

    def __init__(self, loss: LossFn) -> None:
        self.eager = loss
        self.compiled: LossFn | None = torch.compile(loss, dynamic=False)
        self.checked: set[tuple[tuple[int, ...], ...]] = set()  # batch shapes whose graphs compiled

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.compiled is None:
            return self.eager(model, batch)
        shapes = tuple(tuple(v.shape) for v in batch.values())
        if shapes in self.checked:
            return self.compiled(model, batch)
        try:
            # A trial forward and backward compiles both graphs now. The trial's graph is freed, not
            # retained for the caller's backward: with torch 2.13 a second backward through a retained
            # compiled graph gave wrong critic gradients at some shapes (batch 40; 96 and 4,096 were right).
            trial, _ = self.compiled(model, batch)
            torch.autograd.grad(trial, [p for p in model.parameters() if p.requires_grad])
            total, info = self.compiled(model, batch)
        except Exception as e:  # noqa: BLE001 - any compiler failure: inductor raises many kinds
            first_line = (str(e).strip().splitlines() or [""])[0]
            log.warning("machine.compile: torch.compile failed (%s: %s); training goes on in eager mode",
                        type(e).__name__, first_line)
            self.compiled = None
            return self.eager(model, batch)
        self.checked.add(shapes)
        return total, info
