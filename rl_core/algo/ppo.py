"""PPO on one rollout, top to bottom: returns and advantages, the clipped loss, the update loop.

Shapes: ``T`` steps × ``N`` samplers; ``B`` steps of a minibatch; ``K`` log-prob entries per step.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from rl_core.algo.compiled import CompiledLoss, LossFn
from rl_core.algo.fused_ppo import FusedPPOGradients, fused_unsupported, gradient_step
from rl_core.algo.optim import build_optimizer
from rl_core.algo.reward_scaling import RewardScaler
from rl_core.algo.storage import RolloutStorage
from rl_core.checkpoint import CheckpointError
from rl_core.config_check import ConfigError
from rl_core.distributed import StragglerCutoff

log = logging.getLogger(__name__)



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
        dist, values = model(batch["obs"])  # dist: the mean [B, A] (gSDE: [B, A + L], the mean and z(s))
        log_probs = model.log_prob(dist, batch["actions"])  # [B, K]
        entropy = model.entropy(dist).mean()
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
            optimizer.zero_grad(set_to_none=True)
            info = gradient_step(loss, model, batch)
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


@torch.no_grad()
def collect_rollout(model: nn.Module, samplers: Any, storage: RolloutStorage, generator: torch.Generator,
                    bootstrap_truncation: bool, episodes: list[dict[str, Any]], ranks: Any,
                    cutoff: Any = None) -> RolloutStorage:
    """Fill ``storage`` with ``T`` steps of all samplers, acting with the model's samples; returns
    it, or with ``cutoff`` the first ``T' ≤ T`` steps when the straggler cut-off ended the rollout early.
    Finished episodes' metrics are appended to ``episodes``.

    The per-step loop is dispatch-bound (8-row batches), so it does as few torch calls as it can: the
    rollout's noise is drawn in one call (the same numbers as one draw per step when ``N·A`` is a
    multiple of 16), the old log-probs are computed once at the end, and on the CPU the env results
    go into the storage through numpy views.
    """
    buf = samplers.buf
    dev = storage.obs.device
    T, N, _ = storage.actions.shape
    shape, every = model.rollout_noise(T, N)  # [T, N, A] per step; gSDE: [R, N, L, A] held for `every` steps
    if ranks.active:  # every rank draws the noise of all samplers and takes its own block
        noise = torch.randn((shape[0], N * ranks.world, *shape[2:]), generator=generator, device=dev)
        noise = noise[:, ranks.rank * N:(ranks.rank + 1) * N]
    else:
        noise = torch.randn(shape, generator=generator, device=dev)
    host = dev.type == "cpu"
    if host:
        rewards, terminated, truncated, obs_np = (x.numpy() for x in (storage.rewards, storage.terminated,
                                                                    storage.truncated, storage.obs))
    steps = storage.num_steps
    for t in range(storage.num_steps):
        dist, value = model(storage.obs[t])
        storage.means[t] = dist
        storage.values[t] = value
        action = model.sample(dist, noise=noise[t // every], out=storage.actions[t])
        episodes += samplers.step(action.numpy() if host else action.cpu().numpy())
        if host:
            rewards[t], terminated[t], truncated[t] = buf.reward, buf.terminated, buf.truncated
            obs_np[t + 1] = buf.obs
        else:
            storage.rewards[t] = torch.from_numpy(buf.reward).to(dev)
            storage.terminated[t] = torch.from_numpy(buf.terminated).to(dev)
            storage.truncated[t] = torch.from_numpy(buf.truncated).to(dev)
            storage.obs[t + 1] = torch.from_numpy(buf.obs).to(dev)
        if bootstrap_truncation and buf.truncated.any():
            rows = torch.from_numpy(np.flatnonzero(buf.truncated)).to(dev)
            storage.final_values[t, rows] = model(torch.from_numpy(buf.final_obs).to(dev)[rows])[1]
        if cutoff is not None and t + 1 < storage.num_steps and cutoff.should_stop(t + 1):
            steps = t + 1
            break
    if cutoff is not None:
        cutoff.finished()
        storage = storage.prefix(steps) if steps < storage.num_steps else storage
    storage.log_probs.copy_(model.log_prob(storage.means, storage.actions))
    storage.values[-1] = model(storage.obs[-1])[1]
    storage.final_values.mul_(storage.truncated)
    return storage


class PPO:
    """PPO on the run loop (``conf/algo/ppo.yaml``; its keys are :class:`PPOLoss`'s). The rollout and update
    settings (``num_steps``, ``update_repeats``, ``gamma``, ...) are per stage, in ``pipeline``, as in the
    reference's pipeline; reward scaling and the straggler cut-off are PPO's too.

    One iteration: a rollout of ``num_steps × samplers × ranks`` env steps, then ``update_repeats`` passes.
    """

    def __init__(self, clip_param: float = 0.2, value_loss_coef: float = 0.5, entropy_coef: float = 0.0,
                 clip_value_loss: bool = True, normalize_advantage: bool = True) -> None:
        self.loss = PPOLoss(clip_param, value_loss_coef, entropy_coef, clip_value_loss, normalize_advantage)
        self.loss_name = self.loss.name
        self.rollout_fill: float | None = None  # with a straggler cut-off: this rollout's steps / a whole one's

    def bind(self, model: nn.Module, pipeline: Any, machine: Any, ranks: Any, seed: int) -> None:
        """Check the stages against this run, build the optimizer, scheduler, RNG and normalisers."""
        for i in range(len(pipeline.stages)):
            s = pipeline.settings(i)
            if machine.sync_frac is not None and s.minibatch_size is not None and s.minibatch_size * machine.min_rollout_frac < 2:
                raise ConfigError(f"pipeline.stages[{i}]: minibatch_size={s.minibatch_size} is too small for "
                                  f"machine.min_rollout_frac={machine.min_rollout_frac}: a cut rollout could leave "
                                  "a minibatch empty")
            rollout = s.num_steps * machine.num_samplers
            if s.minibatch_size is not None and s.minibatch_size > rollout:
                raise ConfigError(f"pipeline.stages[{i}]: minibatch_size={s.minibatch_size} exceeds the rollout's "
                                  f"num_steps x machine.num_samplers = {rollout} transitions")
            # minibatches split by sampler need one sampler each at least
            if s.minibatch_size is None and s.num_mini_batch > machine.num_samplers:
                raise ConfigError(f"pipeline.stages[{i}]: num_mini_batch={s.num_mini_batch} exceeds "
                                  f"machine.num_samplers={machine.num_samplers}; minibatches split the rollout by sampler")
        self.model, self.pipeline, self.machine, self.ranks = model, pipeline, machine, ranks
        self.device = machine.device
        if machine.fused_update and (why := fused_unsupported(model)) is not None:
            raise ConfigError(f"machine.fused_update=true: {why}; set machine.fused_update=false")
        self.update_loss = (CompiledLoss(self.loss) if machine.compile
                            else FusedPPOGradients(self.loss) if machine.fused_update else self.loss)
        self.optimizer, self.scheduler = build_optimizer(pipeline, model.parameters())
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.reward_scaler = (RewardScaler(machine.num_samplers, pipeline.reward_clip)
                              if pipeline.reward_scaling else None)
        self.cutoff = (StragglerCutoff(ranks, machine.sync_frac, machine.min_rollout_frac, machine.collective_timeout_s)
                       if ranks.active and machine.sync_frac is not None else None)
        self.storage: RolloutStorage | None = None
        self.rollout: RolloutStorage | None = None
        self.rollouts = 0

    def start(self, obs: np.ndarray, rollouts: int) -> None:
        """The samplers' current observations ``[N, D]``; ``rollouts`` done so far (the cut-off's round)."""
        if self.machine.sync_frac is not None and not self.ranks.active:
            log.warning("machine.sync_frac=%g cuts the rollouts of slow ranks; this run has one rank: no effect",
                        self.machine.sync_frac)
        self.obs, self.rollouts = torch.from_numpy(obs).to(self.device), rollouts

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def schedule_to(self, total_steps: int) -> None:
        if self.scheduler is not None:
            self.scheduler.step_to(total_steps)

    def collect(self, samplers: Any, stage: int, episodes: list[dict[str, Any]]) -> int:
        """One rollout of stage ``stage``'s ``num_steps``; returns its env steps, summed over samplers and ranks."""
        s = self.pipeline.settings(stage)
        m = self.machine
        if self.storage is None or self.storage.num_steps != s.num_steps:
            self.storage = RolloutStorage(s.num_steps, m.num_samplers, self.obs.shape[-1], self.model.action_dim,
                                          self.model.log_prob_dims, self.device, self.model.dist_dim)
            self.storage.obs[0] = self.obs
        torch.set_num_threads(1)  # tiny batched inference; more threads only spin
        if self.cutoff is not None:
            self.cutoff.start(self.rollouts, s.num_steps)
        self.rollout = collect_rollout(self.model, samplers, self.storage, self.generator, s.bootstrap_truncation,
                                       episodes, self.ranks, self.cutoff)
        torch.set_num_threads(m.torch_threads)
        self.rollouts += 1
        return s.num_steps * m.num_samplers * self.ranks.world

    def update(self, stage: int) -> dict[str, float]:
        """Returns, advantages and ``update_repeats`` passes over the rollout just collected."""
        s, rollout = self.pipeline.settings(stage), self.rollout
        across = self.ranks.sum if self.ranks.active else None  # normalisers' statistics: global
        if self.reward_scaler is not None:
            self.reward_scaler.scale_(rollout.rewards, torch.maximum(rollout.terminated, rollout.truncated),
                                      s.gamma, across)
        prepare_advantages(rollout, self.loss, s.gamma, s.use_gae, s.gae_lambda, s.bootstrap_truncation, self.ranks)
        losses = ppo_update(self.model, self.update_loss, self.optimizer, rollout, s.update_repeats,
                            s.num_mini_batch, s.max_grad_norm, self.generator, s.minibatch_size,
                            self.ranks.average_gradients)
        if getattr(self.model, "obs_norm", None) is not None:
            # after the update: collection and update of a rollout see the same statistics
            self.model.obs_norm.update(rollout.obs[:-1], across)
        rollout.start_next()
        self.obs = self.storage.obs[0]
        return losses

    def collected_steps(self, stage: int) -> int:
        """Env steps of the last rollout over every rank, as the cut-off left them (one collective)."""
        steps = self.pipeline.settings(stage).num_steps * self.machine.num_samplers * self.ranks.world
        if self.cutoff is None:
            self.rollout_fill = None
            return steps
        now = self.ranks.sum(torch.tensor([float(self.rollout.num_steps * self.machine.num_samplers)],
                                          dtype=torch.float64))
        self.rollout_fill = float(now.item()) / steps
        return int(now.item())

    # -- checkpoint -------------------------------------------------------------------------------

    def weights_loaded(self) -> None:
        """The model's weights were replaced (``checkpoint=FILE``): nothing of PPO's depends on them."""

    def rank_state(self) -> Any:
        """What each rank hands to rank 0 for the checkpoint: its samplers' running returns."""
        return self.reward_scaler.returns if self.reward_scaler is not None else None

    def state_dict(self, rank_states: list[Any]) -> dict[str, Any]:
        scaler = self.reward_scaler
        return {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "generator": self.generator.get_state(),
            "reward_scaler": ({**scaler.state_dict(), "returns": torch.cat(rank_states)} if scaler is not None else None),
        }

    def load_state_dict(self, ckpt: dict[str, Any], path: Any) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("lr_scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.generator.set_state(ckpt["generator"])
        if self.reward_scaler is not None:
            if ckpt.get("reward_scaler") is None:
                raise CheckpointError(f"{path} was saved without reward scaling; resume it with "
                                      "pipeline.reward_scaling=false, or start a new run")
            scaler = ckpt["reward_scaler"]
            if self.ranks.active:  # the running returns of every rank's samplers, in rank order: this rank's block
                k = self.machine.num_samplers
                scaler = {**scaler, "returns": scaler["returns"][self.ranks.rank * k:(self.ranks.rank + 1) * k]}
            self.reward_scaler.load_state_dict(scaler)
