"""Learning-rate schedules over env steps (summed over samplers), not over epochs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR


class LinearDecay:
    """Multiplier that goes linearly from ``startp`` to ``endp`` over ``steps`` env steps, then stays.

    ``steps=None`` means the pipeline's total steps (filled in by the trainer).
    """

    def __init__(self, steps: int | None = None, startp: float = 1.0, endp: float = 0.0) -> None:
        if steps is not None and steps <= 0:
            raise ValueError(f"steps: must be > 0, got {steps}")
        self.steps, self.startp, self.endp = steps, startp, endp

    def __call__(self, step: int) -> float:
        frac = min(step / self.steps, 1.0) if self.steps else 0.0
        return self.startp + (self.endp - self.startp) * frac


class EnvStepLR(LambdaLR):
    """``LambdaLR`` whose lambda receives total env steps; move it with :meth:`step_to` after each rollout."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_lambda: Callable[[int], float]) -> None:
        super().__init__(optimizer, lr_lambda)

    def step_to(self, total_steps: int) -> None:
        self.last_epoch = total_steps
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]
