"""An optimizer and its LR schedule from the pipeline's partials, with bad values refused naming the key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from rl_core.algo.schedules import EnvStepLR, LinearDecay
from rl_core.config_check import ConfigError


def build_optimizer(pipeline: Any, params: Iterable[torch.nn.Parameter],
                    lr: float | None = None) -> tuple[torch.optim.Optimizer, Any]:
    """``pipeline.optimizer(params)`` and ``pipeline.lr_scheduler(optimizer)`` (or None); ``lr`` replaces the
    optimizer's own (an algorithm with a learning rate of its own for one network, e.g. SAC's critics)."""
    try:  # a value the library rejects (lr < 0): one line naming the key
        optimizer = pipeline.optimizer(params) if lr is None else pipeline.optimizer(params, lr=lr)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"pipeline.optimizer: {e}") from None
    try:
        scheduler = pipeline.lr_scheduler(optimizer) if pipeline.lr_scheduler else None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"pipeline.lr_scheduler: {e}") from None
    if isinstance(scheduler, EnvStepLR):
        for fn in scheduler.lr_lambdas:
            if isinstance(fn, LinearDecay) and fn.steps is None:
                fn.steps = pipeline.total_steps
    return optimizer, scheduler
