"""Actor and twin Q critics for off-policy learners (SAC, TD3): actions live in [-1, 1].

The two critics are one batched MLP (weights ``[2, in, out]``, one ``baddbmm`` a layer): half the dispatches of
two separate MLPs, the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.actor_critic import mlp
from models.normalization import ObsNormalizer

ACTORS = ("squashed_gaussian", "deterministic")


class TwinQ(nn.Module):
    """``n`` Q MLPs over ``[obs, action]`` evaluated together; PyTorch's ``nn.Linear`` init for each."""

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int], n: int = 2) -> None:
        super().__init__()
        dims = [in_dim, *hidden_sizes, 1]
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(n, i, o)) for i, o in zip(dims, dims[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(n, 1, o)) for o in dims[1:]])
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[1])  # nn.Linear's kaiming_uniform(a=√5) bound, for weight and bias
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """x ``[B, in]`` → Q ``[n, B]`` (the first ``heads`` critics only, when given)."""
        k = heads or self.weights[0].shape[0]
        h = x.unsqueeze(0).expand(k, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b[:k], h, w[:k])
            if i < last:
                h = F.relu(h)
        return h.squeeze(-1)


class QActorCritic(nn.Module):
    """An actor (``squashed_gaussian`` for SAC, ``deterministic`` for TD3) and twin Q critics, ReLU MLPs.

    Args:
        obs_dim: observation size ``D`` (filled in from the env).
        action_dim: action size ``A`` (filled in from the env).
        hidden_sizes: widths of the hidden layers of the actor and of each critic (RL Zoo / CleanRL: 256, 256).
        actor: ``squashed_gaussian``: tanh of a Normal with a state-dependent log-std (SAC);
            ``deterministic``: tanh of the actor's output (TD3).
        log_std_min / log_std_max: the Gaussian's log-std is squashed into this range (CleanRL's bounds).
        normalize_obs: normalise observations with running statistics (:class:`ObsNormalizer`), saved in the
            model's state; the algorithm updates them as it collects, evaluation uses them frozen.
        obs_clip: clip normalised observations to ±this.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int] = (256, 256),
                 actor: str = "squashed_gaussian", log_std_min: float = -5.0, log_std_max: float = 2.0,
                 normalize_obs: bool = False, obs_clip: float = 10.0) -> None:
        super().__init__()
        if not hidden_sizes or any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: must be a non-empty list of positive widths, got {list(hidden_sizes)}")
        if actor not in ACTORS:
            raise ValueError(f"actor: must be one of {ACTORS}, got {actor!r}")
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min, log_std_max: need min < max, got {log_std_min}, {log_std_max}")
        if obs_clip <= 0:
            raise ValueError(f"obs_clip: must be > 0, got {obs_clip}")
        self.obs_dim, self.action_dim, self.kind = obs_dim, action_dim, actor
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.obs_norm = ObsNormalizer(obs_dim, obs_clip) if normalize_obs else None
        gaussian = actor == "squashed_gaussian"
        self.actor = mlp(obs_dim, hidden_sizes, 2 * action_dim if gaussian else action_dim, "relu")
        self.critic = TwinQ(obs_dim + action_dim, hidden_sizes)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs) if self.obs_norm is not None else obs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Raw obs ``[B, D]`` → (the deterministic action ``[B, A]`` in [-1, 1]: tanh(mean); no value)."""
        return self.mean_action(self.normalize(obs)), None

    def mode(self, action: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`'s first output is already the deterministic action ``[B, A]`` (evaluation's call)."""
        return action

    def mean_action(self, obs_n: torch.Tensor) -> torch.Tensor:
        """Normalised obs ``[B, D]`` → tanh(mean) ``[B, A]`` (the deterministic actor's output)."""
        return torch.tanh(self.actor(obs_n)[..., :self.action_dim])

    def sample(self, obs_n: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAC's reparameterised draw: normalised obs ``[B, D]`` and standard-normal ``noise`` ``[B, A]`` →
        (action tanh(u) ``[B, A]``, its log-density ``[B]`` with the tanh change of variables)."""
        mean, raw = self.actor(obs_n).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        u = mean + log_std.exp() * noise
        # log N(u; mean, std) − Σ log(1 − tanh(u)²), the latter as 2·(log 2 − u − softplus(−2u)) for stability
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
                    - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def q(self, obs_n: torch.Tensor, actions: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """Q of normalised obs ``[B, D]`` and actions ``[B, A]``: ``[2, B]`` (or the first ``heads``)."""
        return self.critic(torch.cat([obs_n, actions], dim=-1), heads)
