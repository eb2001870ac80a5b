"""PPO's loss and its gradients written out by hand for the Gaussian MLP actor-critic (``machine.fused_update``).

The same loss as :class:`rl_core.algo.ppo.PPOLoss` on a :class:`models.actor_critic.MemorylessActorCritic`
without gSDE, with the backward as a few matrix products instead of autograd's graph: a small minibatch's
gradient step is dispatch-bound on a CPU, so half the ops is the speed-up (figures: docs/performance.md,
"MuJoCo wall time"). Gradients equal autograd's to float rounding, not to the bit (sums in another order;
tested), so a run with it draws another curve than one without.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from rl_core.algo.ppo import PPOLoss

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def fused_unsupported(model: nn.Module) -> str | None:
    """Why ``model`` cannot take the fused update, or None when it can."""
    from models.actor_critic import MemorylessActorCritic

    if type(model) is not MemorylessActorCritic:
        return f"{type(model).__name__} is not the Gaussian MLP actor-critic"
    if model.use_sde:
        return "model.use_sde=true (gSDE) has no fused update"
    return None


class FusedPPOGradients:
    """``(model, minibatch) → loss terms``, writing every parameter's ``.grad``: the forward of
    :meth:`PPOLoss.__call__` and its backward in one pass. ``batch`` as ``RolloutStorage.minibatches`` yields:
    obs ``[B, D]``, actions ``[B, A]``, old_log_probs ``[B, K]``, advantages ``[B]``, returns and old_values ``[B]``."""

    def __init__(self, loss: PPOLoss) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.loss
        with torch.no_grad():
            obs = batch["obs"] if model.obs_norm is None else model.obs_norm(batch["obs"])
            mean, actor_cache = _mlp_forward(model._actor_linears, obs, model.squash_mean, model.relu)
            value, critic_cache = _mlp_forward(model._critic_linears, obs, False, model.relu)
            value = value.squeeze(-1)
            b, a = mean.shape
            log_std = model.log_std
            inv_var = torch.exp(-2 * log_std)  # [A]
            diff = batch["actions"] - mean  # [B, A]
            scaled = diff * inv_var  # d log_prob / d mean, per dimension
            lp = -0.5 * diff * scaled - log_std - _HALF_LOG_2PI  # [B, A]
            if model.joint:
                lp = lp.sum(-1, keepdim=True)
            k = lp.shape[1]
            adv = batch["advantages"].unsqueeze(-1)  # [B, 1]
            ratio = torch.exp(lp - batch["old_log_probs"])  # [B, K]
            surr1 = ratio * adv
            surr2 = ratio.clamp(1.0 - c.clip_param, 1.0 + c.clip_param) * adv
            action_loss = -torch.minimum(surr1, surr2).mean()
            # min's gradient reaches the ratio unless the clipped term is strictly smaller (then the clamp is
            # active and passes none); on a tie autograd's halves through both branches add up to the whole.
            g_lp = torch.where(surr1 <= surr2, adv, 0.0).mul_(ratio).mul_(-1.0 / (b * k))  # [B, K]
            returns, old_values = batch["returns"], batch["old_values"]
            err = value - returns
            if c.clip_value_loss:
                delta = value - old_values
                err_clipped = old_values + delta.clamp(-c.clip_param, c.clip_param) - returns
                sq, sq_clipped = err * err, err_clipped * err_clipped
                value_loss = 0.5 * torch.maximum(sq, sq_clipped).mean()
                inside = (delta >= -c.clip_param) & (delta <= c.clip_param)
                g_value = torch.where(sq >= sq_clipped, err, torch.where(inside, err_clipped, 0.0))
            else:
                value_loss = 0.5 * (err * err).mean()
                g_value = err
            g_value = g_value.mul_(c.value_loss_coef / b).unsqueeze(-1)  # [B, 1]
            entropy = (0.5 + _HALF_LOG_2PI + log_std).sum() if model.joint else (0.5 + _HALF_LOG_2PI + log_std).mean()
            total = c.value_loss_coef * value_loss + action_loss - c.entropy_coef * entropy

            g_mean = g_lp * scaled  # [B, A] (K = 1 broadcasts over the dimensions)
            _mlp_backward(model._actor_linears, actor_cache, g_mean, model.squash_mean, model.relu)
            _mlp_backward(model._critic_linears, critic_cache, g_value, False, model.relu)
            if isinstance(log_std, nn.Parameter):
                g_log_std = (g_lp * (diff * scaled - 1.0)).sum(0)  # d log_prob / d log_std: diff²/σ² − 1
                entropy_grad = c.entropy_coef * (1.0 if model.joint else 1.0 / a)
                _accumulate(log_std, g_log_std - entropy_grad)
        return {"ppo_total": total, "value": value_loss, "action": action_loss, "entropy": entropy}


def _mlp_forward(layers: tuple[nn.Linear, ...], x: torch.Tensor, out_tanh: bool, relu: bool
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The MLP's output ``[B, out]`` and each layer's input (then the output) for the backward."""
    cache = [x]
    h = x
    for i, layer in enumerate(layers):
        h = torch.addmm(layer.bias, h, layer.weight.t())
        if i < len(layers) - 1:
            h = h.relu_() if relu else h.tanh_()
        elif out_tanh:
            h = h.tanh_()
        cache.append(h)
    return h, cache


def _mlp_backward(layers: tuple[nn.Linear, ...], cache: list[torch.Tensor], grad: torch.Tensor, out_tanh: bool,
                  relu: bool) -> None:
    """Accumulate the weight and bias gradients of ``layers`` for the output gradient ``grad`` ``[B, out]``."""
    n = len(layers)
    for i in reversed(range(n)):
        out = cache[i + 1]
        if i < n - 1:
            grad = torch.ops.aten.threshold_backward(grad, out, 0) if relu else torch.ops.aten.tanh_backward(grad, out)
        elif out_tanh:
            grad = torch.ops.aten.tanh_backward(grad, out)
        x = cache[i]
        _accumulate(layers[i].weight, grad.t().mm(x))
        _accumulate(layers[i].bias, grad.sum(0))
        if i > 0:
            grad = grad.mm(layers[i].weight)


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    if not param.requires_grad:
        return
    if param.grad is None:
        param.grad = grad
    else:
        param.grad.add_(grad)


def gradient_step(loss: Any, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One minibatch's loss terms, the gradients left in ``.grad``: by hand with a :class:`FusedPPOGradients`,
    otherwise the loss's forward and autograd's backward."""
    if isinstance(loss, FusedPPOGradients):
        return loss(model, batch)
    total, info = loss(model, batch)
    total.backward()
    return info
