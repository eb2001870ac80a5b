"""Reward scaling for PPO on MuJoCo-like tasks: rewards divided by the running std of the discounted return."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from models.normalization import RunningMeanStd


class RewardScaler:
    """Scales a rollout's rewards in place by the running std of each sampler's discounted return.

    As OpenAI baselines' ``VecNormalize`` (and gymnasium's ``NormalizeReward``): per step, every sampler's
    return ``G ← γ·G + r`` is folded into the running variance, the reward becomes ``clip(r / sqrt(var + 1e-8),
    ±clip)``, and ``G`` restarts where the episode ended. Only the training rewards are scaled; episode
    metrics, validation and test report raw rewards. Its state (statistics and the ``N`` running returns) is
    saved in checkpoints, so a resumed run scales exactly as an uninterrupted one.
    """

    def __init__(self, num_samplers: int, clip: float = 10.0) -> None:
        if clip <= 0:
            raise ValueError(f"reward_clip: must be > 0, got {clip}")
        self.clip = clip
        self.stats = RunningMeanStd(())
        self.returns = torch.zeros(num_samplers, dtype=torch.float64)

    @torch.no_grad()
    def scale_(self, rewards: torch.Tensor, done: torch.Tensor, gamma: float,
               across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Scale ``rewards`` ``[T, N]`` in place; ``done`` ``[T, N]`` is 1 where an episode ended at step t.

        With ``across`` (a sum over ranks, ``Ranks.sum``) each step's batch is every rank's samplers, as in
        one process with all of them: one all_reduce of the rollout's ``T`` return sums and sums of squares.
        """
        # a step-by-step recursion: numpy scalars and N-vectors cost a fraction of torch's per-op dispatch
        r = rewards.cpu().numpy().astype(np.float64)
        keep = 1.0 - done.cpu().numpy().astype(np.float64)
        ret = self.returns.numpy()
        steps, n = r.shape
        # the returns do not depend on the statistics: first each step's batch moments, then the recursion
        moments = np.empty((steps, 2))
        for t in range(steps):
            ret *= gamma
            ret += r[t]
            moments[t] = (ret.mean(), ret.var()) if across is None else (ret.sum(), (ret * ret).sum())
            ret *= keep[t]
        if across is not None:
            sums = across(torch.from_numpy(np.append(moments.reshape(-1), n))).numpy()
            n = float(sums[-1])
            moments = sums[:-1].reshape(steps, 2) / n
            moments[:, 1] -= moments[:, 0] ** 2
        mean, var, count = float(self.stats.mean), float(self.stats.var), float(self.stats.count)
        std = np.empty(steps)
        for t, (batch_mean, batch_var) in enumerate(moments):
            delta = batch_mean - mean  # Chan et al.'s update, as RunningMeanStd.update
            total = count + n
            mean += delta * n / total
            var = (var * count + batch_var * n + delta * delta * count * n / total) / total
            count = total
            std[t] = math.sqrt(var + 1e-8)
        self.stats.mean.fill_(mean)
        self.stats.var.fill_(var)
        self.stats.count.fill_(count)
        scaled = np.clip(r / std[:, None], -self.clip, self.clip)
        rewards.copy_(torch.from_numpy(scaled).to(rewards))

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "returns": self.returns.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        if state["returns"].shape != self.returns.shape:
            raise ValueError(f"reward scaler state holds {state['returns'].shape[0]} samplers, "
                             f"this run has {self.returns.shape[0]}")
        self.returns.copy_(state["returns"])
