"""Running statistics and the observation normaliser that MuJoCo-grade PPO needs.

Their state lives in module buffers, so it is saved in the model's ``state_dict`` (every checkpoint) and
restored with it: a policy evaluated from its checkpoint alone sees its observations exactly as in training.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Mean and variance over every row seen so far (Chan et al.'s parallel update), in float64.

    ``count`` starts at ``eps`` (not 0), with mean 0 and variance 1, as in OpenAI baselines, so the first
    update is a weighted blend rather than a division by zero.
    """

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-4) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Fold in the rows of ``x`` ``[B, *shape]``; with ``across`` (a sum over ranks, ``Ranks.sum``) the rows
        of every rank, so that all ranks hold the same statistics."""
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        if across is None:
            batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        else:  # one all_reduce of [rows, Σx, Σx²]
            sums = across(torch.cat([torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device),
                                     x.sum(0).reshape(-1), (x * x).sum(0).reshape(-1)]))
            d = self.mean.numel()
            n = sums[0]
            batch_mean = (sums[1:1 + d] / n).reshape(self.mean.shape)
            batch_var = (sums[1 + d:] / n).reshape(self.mean.shape) - batch_mean**2
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)


class ObsNormalizer(nn.Module):
    """``clamp((obs − mean) / sqrt(var + 1e-8), ±clip)`` with running statistics.

    ``forward`` never changes the statistics: only the trainer's :meth:`update` does, once per rollout after
    the PPO update, so collection, the update, validation and test all see the same frozen statistics.
    """

    def __init__(self, obs_dim: int, clip: float = 10.0) -> None:
        super().__init__()
        if clip <= 0:
            raise ValueError(f"obs_clip: must be > 0, got {clip}")
        self.clip = clip
        self.stats = RunningMeanStd((obs_dim,))
        # float32 copies of the statistics for the forward pass, refreshed by update()
        self.register_buffer("shift", torch.zeros(obs_dim), persistent=False)
        self.register_buffer("scale", torch.ones(obs_dim), persistent=False)
        self._refresh()
        # after a checkpoint's statistics load (children load first), refresh their float32 copies
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh())

    @torch.no_grad()
    def _refresh(self) -> None:
        self.shift.copy_(self.stats.mean)
        self.scale.copy_(1.0 / torch.sqrt(self.stats.var + 1e-8))

    def update(self, obs: torch.Tensor, across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Fold the observations ``[..., D]`` of one rollout (of every rank, with ``across``) into the statistics."""
        self.stats.update(obs, across)
        self._refresh()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs ``[B, D]`` → normalised obs ``[B, D]``."""
        return ((obs - self.shift) * self.scale).clamp_(-self.clip, self.clip)
