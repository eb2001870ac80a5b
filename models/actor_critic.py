"""Gaussian actor-critic with separate actor and critic MLPs (the reference's MemorylessActorCritic).

The MLPs' forward and backward go through ``models/mlp_kernels.py``: the same functions, fewer dispatches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.mlp_kernels import run_mlp

LOG_PROB_MODES = ("per_dim", "joint")


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """``Linear → Tanh`` per hidden width, then a ``Linear`` to ``out_dim``; PyTorch's default init."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size), nn.Tanh()]
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class MemorylessActorCritic(nn.Module):
    """Actor MLP → Tanh mean of a Normal; critic MLP → state value. PyTorch default init.

    Args:
        obs_dim: observation size ``D`` (filled in from the env).
        action_dim: action size ``A`` (filled in from the env).
        hidden_sizes: widths of the hidden Tanh layers of both MLPs (reference: 64, 32).
        action_std: the Normal's standard deviation; fixed (not learned, not saved) unless ``learn_std``.
        learn_std: learn a per-dimension log-std, starting at ``log(action_std)``.
        log_prob: ``per_dim`` keeps one log-prob per action dimension, so PPO clips one ratio per
            dimension (reference); ``joint`` sums them into one ratio per step (standard PPO).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (64, 32),
        action_std: float = 0.5,
        learn_std: bool = False,
        log_prob: str = "per_dim",
    ) -> None:
        super().__init__()
        if not hidden_sizes or any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: must be a non-empty list of positive widths, got {list(hidden_sizes)}")
        if action_std <= 0:
            raise ValueError(f"action_std: must be > 0, got {action_std}")
        if log_prob not in LOG_PROB_MODES:
            raise ValueError(f"log_prob: must be one of {LOG_PROB_MODES}, got {log_prob!r}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.actor = mlp(obs_dim, hidden_sizes, action_dim)
        self.critic = mlp(obs_dim, hidden_sizes, 1)
        self._actor_linears = tuple(m for m in self.actor if isinstance(m, nn.Linear))
        self._critic_linears = tuple(m for m in self.critic if isinstance(m, nn.Linear))
        self.joint = log_prob == "joint"
        log_std = torch.full((action_dim,), math.log(action_std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std, persistent=False)

    @property
    def log_prob_dims(self) -> int:
        """``K``: entries of :meth:`log_prob` per step (``A`` per-dim, 1 joint)."""
        return 1 if self.joint else self.action_dim

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs ``[B, D]`` → (action mean ``[B, A]`` in [-1, 1], value ``[B]``)."""
        return run_mlp(self._actor_linears, obs, out_tanh=True), run_mlp(self._critic_linears, obs).squeeze(-1)

    def sample(self, mean: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Draw actions ``[B, A]`` from Normal(mean, std); unclipped (the env clips).

        ``noise``: standard-normal draws ``[B, A]`` to use instead of drawing from ``generator``;
        ``out``: a tensor to write the actions into.
        """
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.addcmul(mean, self.log_std.exp(), noise, out=out)

    def log_prob(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of ``actions`` ``[B, A]``: ``[B, K]`` (per dimension, or summed when joint)."""
        log_std = self.log_std.expand_as(mean)
        lp = -((actions - mean) ** 2) / (2 * torch.exp(2 * log_std)) - log_std - 0.5 * math.log(2 * math.pi)
        return lp.sum(-1, keepdim=True) if self.joint else lp

    def entropy(self, mean: torch.Tensor) -> torch.Tensor:
        """Entropy ``[B, K]``: ½·ln(2πe·σ²) per dimension (≈ 0.7258 nats for σ = 0.5), summed when joint."""
        ent = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).expand_as(mean)
        return ent.sum(-1, keepdim=True) if self.joint else ent
