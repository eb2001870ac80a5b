"""Returns and advantages of one rollout. Shapes: ``T`` steps × ``N`` samplers."""

from __future__ import annotations

import torch


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
