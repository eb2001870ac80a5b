"""The PPO loss and the update loop over one rollout."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn

from rl_core.returns import compute_returns, normalize
from rl_core.storage import RolloutStorage

log = logging.getLogger(__name__)
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


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


class CompiledLoss:
    """``loss`` through ``torch.compile``: inductor fuses the forward, the loss terms and their backward
    into C++ kernels, one graph per minibatch shape (``dynamic=False``: the shapes of a run are fixed).

    The first call of each shape also runs a backward, so that a compile failure of either graph (no C++
    compiler, an unsupported platform) shows there; it then warns once and the run goes on in eager mode.
    Shapes differ within a run when ``num_mini_batch`` does not divide the samplers.
    """

    def __init__(self, loss: PPOLoss) -> None:
        self.eager = loss
        self.compiled: LossFn | None = torch.compile(loss, dynamic=False)
        self.checked: set[tuple[tuple[int, ...], ...]] = set()  # batch shapes whose graphs compiled

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.compiled is None:
            return self.eager(model, batch)
        shapes = tuple(tuple(v.shape) for v in batch.values())
        if shapes in self.checked:
            return self.compiled(model, batch)
        try:
            # A trial forward and backward compiles both graphs now. The trial's graph is freed, not
            # retained for the caller's backward: with torch 2.13 a second backward through a retained
            # compiled graph gave wrong critic gradients at some shapes (batch 40; 96 and 4,096 were right).
            trial, _ = self.compiled(model, batch)
            torch.autograd.grad(trial, [p for p in model.parameters() if p.requires_grad])
            total, info = self.compiled(model, batch)
        except Exception as e:  # noqa: BLE001 - any compiler failure: inductor raises many kinds
            first_line = (str(e).strip().splitlines() or [""])[0]
            log.warning("machine.compile: torch.compile failed (%s: %s); training goes on in eager mode",
                        type(e).__name__, first_line)
            self.compiled = None
            return self.eager(model, batch)
        self.checked.add(shapes)
        return total, info


def prepare_advantages(storage: RolloutStorage, loss: PPOLoss, gamma: float, use_gae: bool,
                       gae_lambda: float, bootstrap_truncation: bool) -> None:
    """Fill ``storage.returns`` and ``storage.advantages`` (return − value, optionally normalised)."""
    storage.returns.copy_(compute_returns(storage.rewards, storage.values, storage.terminated, storage.truncated,
                                          storage.final_values, gamma, use_gae, gae_lambda, bootstrap_truncation))
    adv = storage.returns - storage.values[:-1]
    storage.advantages.copy_(normalize(adv) if loss.normalize_advantage else adv)


def ppo_update(model: nn.Module, loss: LossFn, optimizer: torch.optim.Optimizer, storage: RolloutStorage,
               update_repeats: int, num_mini_batch: int, max_grad_norm: float,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """``update_repeats`` passes over the rollout, ``num_mini_batch`` optimizer steps each.

    Returns the loss terms averaged over all optimizer steps (``total_loss`` included).
    """
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=storage.obs.device))
    n = 0
    for _ in range(update_repeats):
        for batch in storage.minibatches(num_mini_batch, generator):
            total, info = loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            for k, v in info.items():
                sums[k] += v
            n += 1
    # One host sync per rollout instead of one per optimizer step.
    out = {k: float(v) / n for k, v in sums.items()}
    out["total_loss"] = out["ppo_total"]
    return out
