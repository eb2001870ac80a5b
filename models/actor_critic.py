"""Gaussian actor-critic with separate actor and critic MLPs (the reference's MemorylessActorCritic)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOG_PROB_MODES = ("per_dim", "joint")


class _TrainingMLP(torch.autograd.Function):
    """The function of an MLP made by :func:`_mlp` on update batches (CPU, with gradients), as one autograd
    node with its own backward instead of one node per layer and activation. Its outputs and gradients
    equal per-layer autograd's (``F.linear``, then the activation below) to the bit, but for the first
    layer's weight gradient, which is the same sums in another order (tested). Measured on this 2-core
    machine:

    - tanh is 2·sigmoid(2x) − 1, in place on the layer's output, with tanh's own backward: the same
      function to ~1e-7; ATen's CPU tanh measured 2.5-3.4x slower than its sigmoid, a fifth of a step.
    - the first layer's weight gradient is ``(xᵀ·g)ᵀ`` instead of autograd's ``gᵀ·x``: MKL runs the latter
      on the narrow observation ``x`` (D = 8, 64 outputs) 4-5x slower: 268 vs 62 µs at B = 4,096, 1,040
      vs 200 µs at 16,000, twice per gradient step (actor and critic).
    - one node and in-place activations instead of 5-6 nodes and their temporaries per MLP: a PPO
      gradient step 11% faster than with per-layer nodes at 4,096 samples (5.41 → 4.83 ms), 6% at
      16,000 (14.96 → 14.07 ms; A/B, means of 3 alternating runs).

    ``forward(x [B, D], out_tanh, w1 [H1, D], b1 [H1], w2, b2, ...)`` → ``[B, out]``; ``out_tanh``: tanh
    on the output too (the actor's mean).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, out_tanh: bool,
                *params: torch.Tensor) -> torch.Tensor:
        n = len(params) // 2
        outputs = []
        h = x
        for i in range(n):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i].t())
            if i < n - 1 or out_tanh:
                h.mul_(2).sigmoid_().mul_(2).sub_(1)
            outputs.append(h)
        ctx.out_tanh = out_tanh
        ctx.save_for_backward(x, *outputs, *params)
        return h

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        n = (len(saved) - 1) // 3
        inputs, params = saved[:n + 1], saved[n + 1:]  # inputs[i]: layer i's input; inputs[i + 1]: its output
        grads: list[torch.Tensor | None] = [None] * (2 * n)
        for i in reversed(range(n)):
            if i < n - 1 or ctx.out_tanh:
                grad = torch.ops.aten.tanh_backward(grad, inputs[i + 1])
            x = inputs[i]
            grads[2 * i] = x.t().mm(grad).t().contiguous() if i == 0 else grad.t().mm(x)
            grads[2 * i + 1] = grad.sum(0)
            if i > 0:
                grad = grad.mm(params[2 * i])
        grad_x = grad.mm(params[0]) if ctx.needs_input_grad[0] else None
        return (grad_x, None, *grads)


def _mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size), nn.Tanh()]
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _run_mlp(layers: tuple[nn.Linear, ...], x: torch.Tensor, out_tanh: bool = False) -> torch.Tensor:
    """The function of an MLP made by :func:`_mlp` (its Linear layers given), tanh on the output when
    ``out_tanh``, without a module call per layer: on the 8-row batches of collection, module-call
    overhead was 2/3 of the forward (108 vs 46 us). Update batches take :class:`_TrainingMLP`."""
    if torch.is_grad_enabled() and layers[0].weight.requires_grad and x.device.type == "cpu":
        return _TrainingMLP.apply(x, out_tanh, *(t for layer in layers for t in (layer.weight, layer.bias)))
    # Per-step inference (no grad, a few rows) is dispatch-bound and keeps the one-op tanh.
    x = F.linear(x, layers[0].weight, layers[0].bias)
    for layer in layers[1:]:
        x = F.linear(torch.tanh(x), layer.weight, layer.bias)
    return torch.tanh(x) if out_tanh else x


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
        self.actor = _mlp(obs_dim, hidden_sizes, action_dim)
        self.critic = _mlp(obs_dim, hidden_sizes, 1)
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
        return _run_mlp(self._actor_linears, obs, out_tanh=True), _run_mlp(self._critic_linears, obs).squeeze(-1)

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
