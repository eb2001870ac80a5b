"""Rollout storage: one rollout of ``T`` steps from ``N`` samplers, preallocated."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch


class RolloutStorage:
    """Tensors of one rollout (``D`` obs dims, ``A`` action dims, ``K`` log-prob entries per step).

    obs ``[T+1, N, D]`` (obs[T] is the first of the next rollout), actions ``[T, N, A]``, their
    distribution's parameters ``means`` ``[T, N, P]`` (``P = A``: the Normal's means; gSDE: ``A + L``),
    log_probs ``[T, N, K]``, values ``[T+1, N]``, rewards / terminated / truncated / final_values ``[T, N]``;
    returns ``[T, N]`` after :meth:`set_returns`.
    """

    def __init__(self, num_steps: int, num_samplers: int, obs_dim: int, action_dim: int,
                 log_prob_dims: int, device: torch.device, dist_dim: int | None = None) -> None:
        T, N = num_steps, num_samplers
        self.num_steps, self.num_samplers = T, N
        self.full_steps = T  # a prefix() view keeps the length of the whole rollout
        z = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        self.obs = z(T + 1, N, obs_dim)
        self.actions = z(T, N, action_dim)
        self.means = z(T, N, dist_dim or action_dim)
        self.log_probs = z(T, N, log_prob_dims)
        self.values = z(T + 1, N)
        self.rewards = z(T, N)
        self.terminated = z(T, N)
        self.truncated = z(T, N)
        self.final_values = z(T, N)
        self.returns = z(T, N)
        self.advantages = z(T, N)

    def start_next(self) -> None:
        """Carry the last observation over as the first of the next rollout."""
        self.obs[0].copy_(self.obs[-1])

    def prefix(self, steps: int) -> "RolloutStorage":
        """The first ``steps`` steps as views (a rollout that a straggler cut-off ended early); writes go
        through, and its :meth:`start_next` carries ``obs[steps]`` over."""
        view = copy.copy(self)
        view.num_steps = steps
        for name in ("obs", "values"):
            setattr(view, name, getattr(self, name)[:steps + 1])
        for name in ("actions", "means", "log_probs", "rewards", "terminated", "truncated", "final_values",
                     "returns", "advantages"):
            setattr(view, name, getattr(self, name)[:steps])
        return view

    def minibatches(self, num_mini_batch: int, generator: torch.Generator | None = None,
                    minibatch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Yield ``num_mini_batch`` batches split by sampler (not by time step), flattened to ``[T*n, ...]``;
        or, with ``minibatch_size``, the ``T*N`` transitions shuffled and cut into batches of that many.

        A single minibatch is the whole rollout as views (no copy): the reference's 80 full-batch
        repeats would otherwise copy 16,000 steps each time.
        """
        fields = {"obs": self.obs[:-1], "actions": self.actions, "old_log_probs": self.log_probs,
                  "old_values": self.values[:-1], "returns": self.returns, "advantages": self.advantages}
        device = generator.device if generator is not None else self.obs.device
        if minibatch_size is not None:
            flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in fields.items()}
            perm = torch.randperm(self.num_steps * self.num_samplers, generator=generator, device=device)
            perm = perm.to(self.obs.device)
            # a cut rollout makes as many (smaller) batches as a whole one: every rank takes as many steps
            batches = (perm.split(minibatch_size) if self.num_steps == self.full_steps else
                       perm.tensor_split(math.ceil(self.full_steps * self.num_samplers / minibatch_size)))
            for idx in batches:
                yield {k: v[idx] for k, v in flat.items()}
            return
        if num_mini_batch == 1:
            yield {k: v.reshape(-1, *v.shape[2:]) for k, v in fields.items()}
            return
        perm = torch.randperm(self.num_samplers, generator=generator, device=device).to(self.obs.device)
        # tensor_split, not chunk: exactly num_mini_batch batches (sizes differ by at most one sampler);
        # chunk gives fewer when the samplers do not divide (4 samplers in 3 → 2 batches of 2).
        for idx in perm.tensor_split(num_mini_batch):
            yield {k: v[:, idx].reshape(-1, *v.shape[2:]) for k, v in fields.items()}
