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
        use_sde: generalised state-dependent exploration (gSDE, Raffin et al. 2021; SB3's ``use_sde``): the
            action noise is ``z(s) · M``, with ``z(s)`` the actor's last hidden layer ``[L]`` (detached) and
            ``M ~ Normal(0, σ) [L, A]`` one matrix per sampler, held for ``sde_sample_freq`` steps, so that
            nearby states get the same push. ``σ`` ``[L, A]`` starts at ``action_std`` (learned when
            ``learn_std``); an action's Normal has std ``sqrt(z(s)² · σ² + 1e-6)`` per dimension.
        sde_sample_freq: with ``use_sde``, draw new matrices every this many rollout steps; -1: once per
            rollout (SB3's default).

    With ``use_sde`` the first output of :meth:`forward` is the distribution's parameters ``[B, A + L]``
    (mean, then ``z(s)``); :meth:`mode` reads the mean out of it. Without, it is the mean ``[B, A]``.
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
        use_sde: bool = False,
        sde_sample_freq: int = -1,
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
        if sde_sample_freq == 0 or sde_sample_freq < -1:
            raise ValueError(f"sde_sample_freq: must be -1 (once per rollout) or >= 1 steps, got {sde_sample_freq}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.use_sde, self.sde_sample_freq = use_sde, sde_sample_freq
        self.latent_dim = hidden_sizes[-1] if use_sde else 0
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
        log_std = torch.full((self.latent_dim, action_dim) if use_sde else (action_dim,), math.log(action_std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std, persistent=False)

    @property
    def log_prob_dims(self) -> int:
        """``K``: entries of :meth:`log_prob` per step (``A`` per-dim, 1 joint)."""
        return 1 if self.joint else self.action_dim

    @property
    def dist_dim(self) -> int:
        """``P``: size of the distribution's parameters per step, :meth:`forward`'s first output (``A``, or
        ``A + L`` with gSDE)."""
        return self.action_dim + self.latent_dim

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs ``[B, D]`` → (distribution parameters ``[B, P]``: the action mean, in [-1, 1] when squashed,
        then with gSDE the latent ``z(s)``; value ``[B]``)."""
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        value = run_mlp(self._critic_linears, obs, relu=self.relu).squeeze(-1)
        if not self.use_sde:
            return run_mlp(self._actor_linears, obs, out_tanh=self.squash_mean, relu=self.relu), value
        hidden, last = self._actor_linears[:-1], self._actor_linears[-1]
        latent = run_mlp(hidden, obs, out_tanh=not self.relu, relu=self.relu)  # tanh (or ReLU below) on z(s)
        latent = latent.relu() if self.relu else latent
        mean = torch.nn.functional.linear(latent, last.weight, last.bias)
        return torch.cat([torch.tanh(mean) if self.squash_mean else mean, latent], dim=-1), value

    def mode(self, dist: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``[B, A]`` (the mean) of distribution parameters ``[B, P]``."""
        return dist[..., :self.action_dim] if self.use_sde else dist

    def std(self, dist: torch.Tensor) -> torch.Tensor:
        """The Normal's std per action dimension ``[B, A]``; with gSDE ``sqrt(z² · σ² + 1e-6)``, the latent
        detached (SB3's ``learn_features=False``): σ learns from it, the actor's features from the mean."""
        if not self.use_sde:
            return self.log_std.exp().expand_as(dist)
        latent = dist[..., self.action_dim:].detach()
        return torch.sqrt(latent.pow(2) @ torch.exp(2 * self.log_std) + 1e-6)

    def rollout_noise(self, num_steps: int, num_samplers: int) -> tuple[tuple[int, ...], int]:
        """The standard-normal draws a rollout of ``T`` steps × ``N`` samplers takes, and every how many steps
        it moves to the next row: ``([T, N, A], 1)``, or with gSDE ``([R, N, L, A], k)``, one matrix per sampler
        held for ``k`` steps (``R = ceil(T / k)``)."""
        if not self.use_sde:
            return (num_steps, num_samplers, self.action_dim), 1
        every = num_steps if self.sde_sample_freq < 0 else self.sde_sample_freq
        return (-(-num_steps // every), num_samplers, self.latent_dim, self.action_dim), every

    def sample(self, dist: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Draw actions ``[B, A]`` from distribution parameters ``[B, P]``; unclipped (the env's
        ``action_handling`` clips).

        ``noise``: standard-normal draws, ``[B, A]`` (``[B, L, A]``: the gSDE matrices) to use instead of
        drawing from ``generator`` (which for gSDE draws new matrices for this one step);
        ``out``: a tensor to write the actions into.
        """
        if not self.use_sde:
            if noise is None:
                noise = torch.randn(dist.shape, generator=generator, device=dist.device, dtype=dist.dtype)
            return torch.addcmul(dist, self.log_std.exp(), noise, out=out)
        mean, latent = dist[..., :self.action_dim], dist[..., self.action_dim:]
        if noise is None:
            noise = torch.randn((dist.shape[0], self.latent_dim, self.action_dim), generator=generator,
                                device=dist.device, dtype=dist.dtype)
        push = torch.bmm(latent.unsqueeze(1), noise * self.log_std.exp()).squeeze(1)  # z(s) · M, [B, A]
        return torch.add(mean, push, out=out)

    def log_prob(self, dist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of ``actions`` ``[B, A]`` under distribution parameters ``[B, P]``: ``[B, K]`` (per
        dimension, or summed when joint)."""
        if self.use_sde:
            mean, std = self.mode(dist), self.std(dist)
            lp = -((actions - mean) ** 2) / (2 * std * std) - std.log() - 0.5 * math.log(2 * math.pi)
            return lp.sum(-1, keepdim=True) if self.joint else lp
        log_std = self.log_std.expand_as(dist)
        lp = -((actions - dist) ** 2) / (2 * torch.exp(2 * log_std)) - log_std - 0.5 * math.log(2 * math.pi)
        return lp.sum(-1, keepdim=True) if self.joint else lp

    def entropy(self, dist: torch.Tensor) -> torch.Tensor:
        """Entropy ``[B, K]``: ½·ln(2πe·σ²) per dimension (≈ 0.7258 nats for σ = 0.5), summed when joint."""
        if self.use_sde:
            ent = 0.5 + 0.5 * math.log(2 * math.pi) + self.std(dist).log()
        else:
            ent = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).expand_as(dist)
        return ent.sum(-1, keepdim=True) if self.joint else ent
