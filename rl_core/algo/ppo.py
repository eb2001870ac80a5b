"""PPO on one rollout, top to bottom: returns and advantages, the clipped loss, the update loop.

Shapes: ``T`` steps × ``N`` samplers; ``B`` steps of a minibatch; ``K`` log-prob entries per step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rl_core.algo.storage import RolloutStorage

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def compute_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    use_gae: bool = False,
    gae_lambda: float = 0.95,
    bootstrap_truncation: bool = False,
) -> torch.Tensor:
    """Discounted returns ``[T, N]``, bootstrapped with ``values[T]`` at the rollout's end.

    Args:
        rewards: ``[T, N]`` reward of step ``t``.
        values: ``[T + 1, N]`` V(obs_t); ``values[T]`` is V of the observation after the rollout.
        terminated: ``[T, N]`` 1.0 where the episode ended in a terminal state at step ``t``.
        truncated: ``[T, N]`` 1.0 where it hit the time limit at step ``t``.
        final_values: ``[T, N]`` V(final observation) of truncated episodes (read only where truncated).
        gamma: discount.
        use_gae: GAE(λ) instead of Monte Carlo returns (the reference: Monte Carlo).
        gae_lambda: λ of GAE.
        bootstrap_truncation: bootstrap a truncated episode with V(final obs); the reference
            (False) treats the time limit as terminal.
    """
    T = rewards.shape[0]
    done = torch.maximum(terminated, truncated)
    # What follows step t inside the same episode, and the value to bootstrap with where it ended.
    continues = 1.0 - done
    cut_bootstrap = truncated * (1.0 - terminated) * final_values if bootstrap_truncation else torch.zeros_like(rewards)
    returns = torch.empty_like(rewards)
    if use_gae:
        gae = torch.zeros_like(rewards[0])
        for t in reversed(range(T)):
            next_value = continues[t] * values[t + 1] + cut_bootstrap[t]
            delta = rewards[t] + gamma * next_value - values[t]
            gae = delta + gamma * gae_lambda * continues[t] * gae
            returns[t] = gae + values[t]
        return returns
    running = values[T]
    for t in reversed(range(T)):
        running = rewards[t] + gamma * (continues[t] * running + cut_bootstrap[t])
        returns[t] = running
    return returns


def normalize(advantages: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(A − mean) / (std + eps) over the whole rollout, as the reference does once per rollout."""
    return (advantages - advantages.mean()) / (advantages.std() + eps)


class PPOLoss:
    """Clipped PPO objective (``conf/algo/ppo.yaml``); the reference's defaults.

    Args:
        clip_param: ratio clip ε; also the value clip, in raw return units, when ``clip_value_loss``.
        value_loss_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus (reference: 0).
        clip_value_loss: clip the value prediction around the rollout's old values (reference: on).
        normalize_advantage: normalise advantages once per rollout, (A − mean)/(std + 1e-5).
    """

    name = "ppo_loss"

    def __init__(self, clip_param: float = 0.2, value_loss_coef: float = 0.5, entropy_coef: float = 0.0,
                 clip_value_loss: bool = True, normalize_advantage: bool = True) -> None:
        if clip_param <= 0:
            raise ValueError(f"clip_param: must be > 0, got {clip_param}")
        if value_loss_coef < 0 or entropy_coef < 0:
            raise ValueError("value_loss_coef, entropy_coef: must be >= 0")
        self.clip_param = clip_param
        self.value_loss_coef = value_loss_coef
        self.entropy_coef = entropy_coef
        self.clip_value_loss = clip_value_loss
        self.normalize_advantage = normalize_advantage

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one minibatch of ``B`` steps; ``batch`` as yielded by ``RolloutStorage.minibatches``.

        The ratio has ``K`` entries per step (one per action dimension, or one when the model's
        log-prob is joint); each is clipped and the action loss is the mean over ``B × K``.
        """
        mean, values = model(batch["obs"])
        log_probs = model.log_prob(mean, batch["actions"])  # [B, K]
        entropy = model.entropy(mean).mean()
        adv = batch["advantages"].unsqueeze(-1)  # [B, 1], broadcast over K
        ratio = torch.exp(log_probs - batch["old_log_probs"])
        clipped = ratio.clamp(1.0 - self.clip_param, 1.0 + self.clip_param)
        action_loss = -torch.min(ratio * adv, clipped * adv).mean()
        returns, old_values = batch["returns"], batch["old_values"]
        if self.clip_value_loss:
            values_clipped = old_values + (values - old_values).clamp(-self.clip_param, self.clip_param)
            value_loss = 0.5 * torch.max((values - returns) ** 2, (values_clipped - returns) ** 2).mean()
        else:
            value_loss = 0.5 * ((values - returns) ** 2).mean()
        total = self.value_loss_coef * value_loss + action_loss - self.entropy_coef * entropy
        return total, {"ppo_total": total.detach(), "value": value_loss.detach(),
                       "action": action_loss.detach(), "entropy": entropy.detach()}


def prepare_advantages(storage: RolloutStorage, loss: PPOLoss, gamma: float, use_gae: bool,
                       gae_lambda: float, bootstrap_truncation: bool, ranks: Any = None) -> None:
    """Fill ``storage.returns`` and ``storage.advantages`` (return − value, optionally normalised; over
    every rank's rollout when ``ranks`` (``rl_core.distributed.Ranks``) has several)."""
    storage.returns.copy_(compute_returns(storage.rewards, storage.values, storage.terminated, storage.truncated,
                                          storage.final_values, gamma, use_gae, gae_lambda, bootstrap_truncation))
    adv = storage.returns - storage.values[:-1]
    if loss.normalize_advantage and ranks is not None and ranks.active:
        adv = normalize_across(adv, ranks)
    elif loss.normalize_advantage:
        adv = normalize(adv)
    storage.advantages.copy_(adv)


def normalize_across(advantages: torch.Tensor, ranks: Any, eps: float = 1e-5) -> torch.Tensor:
    """:func:`normalize` with the mean and (unbiased) std of all ranks' advantages together."""
    a = advantages.double()
    n, total, squares = ranks.sum(torch.stack([torch.tensor(float(a.numel()), dtype=torch.float64, device=a.device),
                                               a.sum(), (a * a).sum()]))
    mean = total / n
    std = torch.sqrt((squares - n * mean * mean) / (n - 1))
    return ((a - mean) / (std + eps)).to(advantages.dtype)


def ppo_update(model: nn.Module, loss: LossFn, optimizer: torch.optim.Optimizer, storage: RolloutStorage,
               update_repeats: int, num_mini_batch: int, max_grad_norm: float,
               generator: torch.Generator | None = None, minibatch_size: int | None = None,
               sync_gradients: Callable[[list[nn.Parameter]], None] | None = None) -> dict[str, float]:
    """``update_repeats`` passes over the rollout, ``num_mini_batch`` optimizer steps each (or one per
    ``minibatch_size`` shuffled transitions). ``sync_gradients`` (several ranks) averages the gradients
    across ranks before the clip and the step.

    Returns the loss terms averaged over all optimizer steps (``total_loss`` included).
    """
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=storage.obs.device))
    params = list(model.parameters())
    n = 0
    for _ in range(update_repeats):
        for batch in storage.minibatches(num_mini_batch, generator, minibatch_size):
            total, info = loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if sync_gradients is not None:
                sync_gradients(params)
            nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            for k, v in info.items():
                sums[k] += v
            n += 1
    # One host sync per rollout instead of one per optimizer step.
    out = {k: float(v) / n for k, v in sums.items()}
    out["total_loss"] = out["ppo_total"]
    return out
