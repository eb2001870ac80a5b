"""Soft Actor-Critic (Haarnoja et al. 2018, with automatic entropy tuning), top to bottom.

Shapes: ``B`` transitions of a batch, ``A`` action dims; the critics' output ``[2, B]``. Actions in [-1, 1]
(the env's ``action_handling=rescale`` maps them to its bounds).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rl_core.algo.offpolicy import OffPolicy


class SAC(OffPolicy):
    """SAC (``conf/algo/sac.yaml``): a tanh-squashed Gaussian actor, twin Q critics with Polyak targets and a
    learned entropy coefficient α (target entropy −|A|). See :class:`OffPolicy` for the loop's arguments.

    Args:
        init_alpha: α at the start (SB3: 1.0; CleanRL: log α = 0 too).
        autotune: learn α so that the policy's entropy tracks ``target_entropy``; False keeps ``init_alpha``.
        target_entropy: None: −|A|.
    """

    model_actor, model_preset = "squashed_gaussian", "sac_mlp"
    loss_name = "sac_loss"

    def __init__(self, buffer_size: int = 1_000_000, batch_size: int = 256, learning_starts: int = 10_000,
                 train_freq: int = 1, gradient_steps: int = 1, gamma: float = 0.99, tau: float = 0.005,
                 critic_lr: float | None = None, init_alpha: float = 1.0, autotune: bool = True,
                 target_entropy: float | None = None, optimize_memory_usage: bool = False) -> None:
        super().__init__(buffer_size, batch_size, learning_starts, train_freq, gradient_steps, gamma, tau, critic_lr,
                         optimize_memory_usage)
        if init_alpha <= 0:
            raise ValueError(f"init_alpha: must be > 0, got {init_alpha}")
        self.init_alpha, self.autotune, self.target_entropy = init_alpha, autotune, target_entropy

    def networks(self) -> dict[str, list[torch.nn.Parameter]]:
        m = self.model
        self.log_alpha = torch.tensor(math.log(self.init_alpha), device=self.device, requires_grad=self.autotune)
        if self.target_entropy is None:
            self.target_entropy = -float(m.action_dim)
        nets = {"actor": list(m.actor.parameters()), "critic": list(m.critic.parameters())}
        if self.autotune:
            nets["alpha"] = [self.log_alpha]
        return nets

    def explore(self, obs_n: torch.Tensor) -> torch.Tensor:
        """A draw of the squashed Gaussian ``[N, A]``."""
        noise = torch.randn((obs_n.shape[0], self.model.action_dim), generator=self.generator, device=self.device)
        return self.model.sample(obs_n, noise)[0]

    def gradient_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One update of critics, actor and α on a batch (obs already normalised)."""
        m, B = self.model, batch["rewards"].shape[0]
        alpha = self.log_alpha.detach().exp()
        # critics: y = r + γ·(1 − terminated)·(min target Q(s', a') − α·log π(a'|s')), a' ~ π(·|s')
        with torch.no_grad():
            noise = torch.randn((2, B, m.action_dim), generator=self.generator, device=self.device)
            next_a, next_logp = m.sample(batch["next_obs"], noise[0])
            next_q = self.target.q(batch["next_obs"], next_a).min(0).values - alpha * next_logp
            y = batch["rewards"] + self.gamma * (1.0 - batch["terminated"]) * next_q
        q = m.q(batch["obs"], batch["actions"])
        critic_loss = 0.5 * (q - y).pow(2).mean(1).sum()
        self.step(self.optimizers["critic"], critic_loss, self.params("critic"))
        # actor: E[α·log π(a|s) − min Q(s, a)], a ~ π(·|s) reparameterised; gradients to the actor only
        a, logp = m.sample(batch["obs"], noise[1])
        actor_loss = (alpha * logp - m.q(batch["obs"], a).min(0).values).mean()
        self.step(self.optimizers["actor"], actor_loss, self.params("actor"))
        out = {"critic": critic_loss.detach(), "actor": actor_loss.detach(), "alpha": alpha,
               "entropy": -logp.detach().mean(), "q": q.detach().mean()}
        if self.autotune:  # α ← α·exp(−lr·∂): raise α while the entropy is under its target
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.step(self.optimizers["alpha"], alpha_loss, [self.log_alpha])
        out["total_loss"] = out["critic"] + out["actor"]
        self.polyak(m.critic, self.target.critic)
        return out

    def extra_state(self) -> dict[str, Any]:
        return {"log_alpha": self.log_alpha.detach().clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
