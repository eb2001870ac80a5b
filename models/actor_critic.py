"""Gaussian actor-critic with separate actor and critic MLPs (the reference's MemorylessActorCritic).

The MLPs' forward and backward go through ``models/mlp_kernels.py``: the same functions, fewer dispatches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.mlp_kernels import run_mlp
from models.normalization import ObsNormalizer

LOG_PROB_MODES = ("per_dim", "joint")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
INITS = ("default", "orthogonal")


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: str = "tanh") -> nn.Sequential:
    """``Linear → activation`` per hidden width, then a ``Linear`` to ``out_dim``; PyTorch's default init."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size), ACTIVATIONS[activation]()]
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def orthogonal_init(net: nn.Sequential, out_gain: float) -> None:
    """Orthogonal weights (gain √2 on hidden layers, ``out_gain`` on the last) and zero biases, as the
    MuJoCo PPO baselines (OpenAI baselines, CleanRL) initialise."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, gain=out_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(layer.bias)


class MemorylessActorCritic(nn.Module):
    """Actor MLP → (Tanh) mean of a Normal; critic MLP → state value. The defaults are the reference's.

    Args:
        obs_dim: observation size ``D`` (filled in from the env).
        action_dim: action size ``A`` (filled in from the env).
        hidden_sizes: widths of the hidden layers of both MLPs (reference: 64, 32).
        action_std: the Normal's standard deviation; fixed (not learned, not saved) unless ``learn_std``.
        learn_std: learn a per-dimension log-std, starting at ``log(action_std)``.
        log_prob: ``per_dim`` keeps one log-prob per action dimension, so PPO clips one ratio per
            dimension (reference); ``joint`` sums them into one ratio per step (standard PPO).
        activation: of the hidden layers, ``tanh`` (reference) or ``relu``.
        init: ``default`` (PyTorch's, reference) or ``orthogonal`` (gain √2 hidden, 0.01 actor out, 1 critic out).
        squash_mean: the action mean goes through tanh into [-1, 1] (reference); False: a linear mean, as
            the MuJoCo baselines use (the env's ``action_handling`` then clips or rescales).
        normalize_obs: normalise observations with running statistics (:class:`ObsNormalizer`), saved in
            the model's state and so in every checkpoint; the trainer updates them once per rollout.
        obs_clip: clip normalised observations to ±this.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (64, 32),
        action_std: float = 0.5,
        learn_std: bool = False,
        log_prob: str = "per_dim",
        activation: str = "tanh",
        init: str = "default",
        squash_mean: bool = True,
        normalize_obs: bool = False,
        obs_clip: float = 10.0,
    ) -> None:
        super().__init__()
        if not hidden_sizes or any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: must be a non-empty list of positive widths, got {list(hidden_sizes)}")
        if action_std <= 0:
            raise ValueError(f"action_std: must be > 0, got {action_std}")
        if log_prob not in LOG_PROB_MODES:
            raise ValueError(f"log_prob: must be one of {LOG_PROB_MODES}, got {log_prob!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if obs_clip <= 0:  # checked whether or not normalize_obs is on, so a wrong value never waits silently
            raise ValueError(f"obs_clip: must be > 0, got {obs_clip}")
        if init not in INITS:
            raise ValueError(f"init: must be one of {INITS}, got {init!r}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.obs_norm = ObsNormalizer(obs_dim, obs_clip) if normalize_obs else None
        self.actor = mlp(obs_dim, hidden_sizes, action_dim, activation)
        self.critic = mlp(obs_dim, hidden_sizes, 1, activation)
        if init == "orthogonal":
            orthogonal_init(self.actor, 0.01)
            orthogonal_init(self.critic, 1.0)
        self.relu, self.squash_mean = activation == "relu", squash_mean
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
        """obs ``[B, D]`` → (action mean ``[B, A]``, in [-1, 1] when squashed; value ``[B]``)."""
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        return (run_mlp(self._actor_linears, obs, out_tanh=self.squash_mean, relu=self.relu),
                run_mlp(self._critic_linears, obs, relu=self.relu).squeeze(-1))

    def sample(self, mean: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Draw actions ``[B, A]`` from Normal(mean, std); unclipped (the env's ``action_handling`` clips).

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
