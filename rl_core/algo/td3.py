"""TD3 (Fujimoto et al. 2018): a deterministic actor, clipped double Q, target policy smoothing and delayed
policy updates, top to bottom.

Shapes: ``B`` transitions of a batch, ``A`` action dims; the critics' output ``[2, B]``; actions in [-1, 1].
"""

from __future__ import annotations

import torch

from rl_core.algo.offpolicy import OffPolicy


class TD3(OffPolicy):
    """TD3 (``conf/algo/td3.yaml``). See :class:`OffPolicy` for the loop's arguments.

    Args:
        exploration_noise: std of the Gaussian noise added to the actor's action while collecting (CleanRL: 0.1).
        target_noise: std of the smoothing noise on the target action (0.2) ...
        noise_clip: ... clipped to ±this (0.5).
        policy_delay: gradient steps per actor (and target) update (2).
    """

    model_actor, model_preset = "deterministic", "td3_mlp"
    loss_name = "td3_loss"

    def __init__(self, buffer_size: int = 1_000_000, batch_size: int = 256, learning_starts: int = 10_000,
                 train_freq: int = 1, gradient_steps: int = 1, gamma: float = 0.99, tau: float = 0.005,
                 critic_lr: float | None = None, exploration_noise: float = 0.1, target_noise: float = 0.2,
                 noise_clip: float = 0.5, policy_delay: int = 2, optimize_memory_usage: bool = False) -> None:
        super().__init__(buffer_size, batch_size, learning_starts, train_freq, gradient_steps, gamma, tau, critic_lr,
                         optimize_memory_usage)
        if min(exploration_noise, target_noise, noise_clip) < 0 or policy_delay < 1:
            raise ValueError("exploration_noise, target_noise, noise_clip: must be >= 0; policy_delay: >= 1")
        self.exploration_noise, self.target_noise = exploration_noise, target_noise
        self.noise_clip, self.policy_delay = noise_clip, policy_delay

    def networks(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"actor": list(self.model.actor.parameters()), "critic": list(self.model.critic.parameters())}

    def explore(self, obs_n: torch.Tensor) -> torch.Tensor:
        """The actor's action plus Gaussian noise, clipped to [-1, 1]: ``[N, A]``."""
        a = self.model.mean_action(obs_n)
        noise = torch.randn(a.shape, generator=self.generator, device=self.device)
        return (a + self.exploration_noise * noise).clamp(-1.0, 1.0)

    def gradient_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One critic update; every ``policy_delay``-th, an actor update and the targets' Polyak step."""
        m = self.model
        # critics: y = r + γ·(1 − terminated)·min target Q(s', clip(μ'(s') + clip(ε, ±c), ±1)), ε ~ N(0, σ²)
        with torch.no_grad():
            next_a = self.target.mean_action(batch["next_obs"])
            eps = torch.randn(next_a.shape, generator=self.generator, device=self.device) * self.target_noise
            next_a = (next_a + eps.clamp(-self.noise_clip, self.noise_clip)).clamp(-1.0, 1.0)
            next_q = self.target.q(batch["next_obs"], next_a).min(0).values
            y = batch["rewards"] + self.gamma * (1.0 - batch["terminated"]) * next_q
        q = m.q(batch["obs"], batch["actions"])
        critic_loss = 0.5 * (q - y).pow(2).mean(1).sum()
        self.step(self.optimizers["critic"], critic_loss, self.params("critic"))
        out = {"critic": critic_loss.detach(), "q": q.detach().mean()}
        if (self.updates + 1) % self.policy_delay == 0:
            # actor: −Q1(s, μ(s)), gradients to the actor only; then both targets move
            actor_loss = -m.q(batch["obs"], m.mean_action(batch["obs"]), heads=1).mean()
            self.step(self.optimizers["actor"], actor_loss, self.params("actor"))
            self.polyak(m.actor, self.target.actor)
            self.polyak(m.critic, self.target.critic)
            out["actor"] = actor_loss.detach()
        out["total_loss"] = critic_loss.detach()
        return out
