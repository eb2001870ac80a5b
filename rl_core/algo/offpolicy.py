"""What SAC and TD3 share on the run loop: collecting into the replay buffer, the update-to-data ratio, the
Polyak-averaged targets and the checkpointed state. The losses are in ``sac.py`` and ``td3.py``.

Env steps are summed over samplers: one iteration is ``train_freq × N`` of them, then ``gradient_steps``
updates of ``batch_size`` transitions (once ``learning_starts`` env steps were collected).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from rl_core.algo.optim import build_optimizer
from rl_core.algo.replay import IndexedReplayBuffer, ReplayBuffer
from rl_core.checkpoint import CheckpointError
from rl_core.config_check import ConfigError

LOG_EVERY = 250  # gradient steps averaged into one train/<loss>/* record


class OffPolicy:
    """The off-policy learner's loop half. Subclasses give ``explore`` (an action to collect with) and
    ``gradient_step`` (one update), and ``networks`` (the optimizers' parameter groups).

    Args:
        buffer_size: replay capacity in transitions (rows; ``N`` a step with ``N`` samplers).
        batch_size: transitions per gradient step.
        learning_starts: env steps (summed over samplers) of uniform random actions before any update.
        train_freq: env steps per sampler between updates.
        gradient_steps: updates after each ``train_freq`` steps (UTD = gradient_steps / (train_freq · N)).
        gamma: discount.
        tau: Polyak rate of the target networks (target ← (1 − τ)·target + τ·online).
        critic_lr: a learning rate for the critics instead of ``pipeline.optimizer``'s (CleanRL: 1e-3); None: the same.
        optimize_memory_usage: store each observation once, next_obs by index (:class:`IndexedReplayBuffer`,
            as SB3's option; time limits stay exact): ~half the buffer's bytes at large observations.
    """

    model_actor = "squashed_gaussian"
    # PPO's rollout and update keys: refused under an off-policy learner (rl_core.modes.check_algo_fits)
    refused_pipeline_keys = ("num_steps", "update_repeats", "num_mini_batch", "minibatch_size", "gamma", "use_gae",
                             "gae_lambda", "bootstrap_truncation", "max_grad_norm", "reward_scaling", "reward_clip")

    def __init__(self, buffer_size: int = 1_000_000, batch_size: int = 256, learning_starts: int = 10_000,
                 train_freq: int = 1, gradient_steps: int = 1, gamma: float = 0.99, tau: float = 0.005,
                 critic_lr: float | None = None, optimize_memory_usage: bool = False) -> None:
        for key, v in (("buffer_size", buffer_size), ("batch_size", batch_size), ("train_freq", train_freq)):
            if v < 1:
                raise ValueError(f"{key}: must be >= 1, got {v}")
        if learning_starts < 0 or gradient_steps < 0:
            raise ValueError(f"learning_starts, gradient_steps: must be >= 0, got {learning_starts}, {gradient_steps}")
        if not 0 < gamma <= 1 or not 0 < tau <= 1:
            raise ValueError(f"gamma, tau: must lie in (0, 1], got {gamma}, {tau}")
        self.buffer_size, self.batch_size, self.learning_starts = buffer_size, batch_size, learning_starts
        self.train_freq, self.gradient_steps, self.gamma, self.tau = train_freq, gradient_steps, gamma, tau
        self.critic_lr, self.optimize_memory_usage = critic_lr, optimize_memory_usage
        self.rollout_fill = None  # no straggler cut-off off-policy

    # -- set-up -----------------------------------------------------------------------------------

    def bind(self, model: nn.Module, pipeline: Any, machine: Any, ranks: Any, seed: int) -> None:
        """Check the model and the run's layout; build the buffer, the targets, the optimizers and the RNG."""
        name = type(self).__name__
        if ranks.active:
            raise ConfigError(f"algo: {name} runs on one rank (got {ranks.world}); an update per env step makes a "
                              "gradient all_reduce per step cost more than it brings: run one process, or algo=ppo")
        if getattr(model, "kind", None) != self.model_actor:
            raise ConfigError(f"model: {name} needs a QActorCritic with actor={self.model_actor} "
                              f"(model={self.model_preset}), got {type(model).__name__}"
                              f"{' actor=' + model.kind if hasattr(model, 'kind') else ''}")
        if machine.compile:
            raise ConfigError(f"machine.compile: compiles PPO's loss; {name} runs eager, set machine.compile=false")
        if machine.sync_frac is not None:
            raise ConfigError(f"machine.sync_frac: the straggler cut-off is PPO's; {name} runs on one rank")
        if self.optimize_memory_usage and self.buffer_size <= machine.num_samplers:
            raise ConfigError(f"algo.buffer_size: must exceed machine.num_samplers ({machine.num_samplers}) with "
                              f"algo.optimize_memory_usage=true (a row's next obs is a step later), got {self.buffer_size}")
        self.model, self.machine, self.device = model, machine, machine.device
        self.buffer = (IndexedReplayBuffer(self.buffer_size, model.obs_dim, model.action_dim, self.device,
                                           machine.num_samplers) if self.optimize_memory_usage else
                       ReplayBuffer(self.buffer_size, model.obs_dim, model.action_dim, self.device))
        self.target = copy.deepcopy(model).requires_grad_(False)  # only the parts the losses read are used
        self.optimizers, self.schedulers = {}, {}
        for key, params in self.networks().items():
            lr = self.critic_lr if key == "critic" else None
            self.optimizers[key], self.schedulers[key] = build_optimizer(pipeline, params, lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.steps = 0            # env steps collected, summed over samplers
        self.updates = 0          # gradient steps taken
        self._sums: dict[str, torch.Tensor] = {}  # loss terms since the last record, and how many of each
        self._counts: dict[str, int] = {}
        self._summed = 0

    def networks(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def weights_loaded(self) -> None:
        """The model's weights were replaced (``checkpoint=FILE``): the targets start from them too."""
        self.target.load_state_dict(self.model.state_dict())

    def start(self, obs: np.ndarray, rollouts: int) -> None:
        """The samplers' current observations ``[N, D]`` (after a reset, or restored on resume)."""
        torch.set_num_threads(self.machine.torch_threads)
        self.obs = torch.from_numpy(obs.copy()).to(self.device)  # obs may be the samplers' shared array

    @property
    def lr(self) -> float:
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def schedule_to(self, total_steps: int) -> None:
        for scheduler in self.schedulers.values():
            if scheduler is not None:
                scheduler.step_to(total_steps)

    # -- the loop's two verbs -----------------------------------------------------------------------

    @torch.no_grad()
    def collect(self, samplers: Any, stage: int, episodes: list[dict[str, Any]]) -> int:
        """``train_freq`` env steps of every sampler into the buffer; returns them, summed over samplers.

        Where an episode ended, next_obs is its final observation (the samplers reset in the same step, so
        no step of a finished episode is ever played with an ignored action); terminated rows do not
        bootstrap, time limits do.
        """
        buf, n = samplers.buf, self.obs.shape[0]
        for _ in range(self.train_freq):
            if self.steps < self.learning_starts:
                action = torch.rand((n, self.model.action_dim), generator=self.generator, device=self.device) * 2 - 1
            else:
                action = self.explore(self.model.normalize(self.obs))
            episodes += samplers.step(action.cpu().numpy())
            obs = buf.obs.copy()  # the samplers' array is overwritten by their next step
            next_obs, ended = obs, buf.terminated | buf.truncated
            if ended.any():
                next_obs = obs.copy()
                next_obs[ended] = buf.final_obs[ended]
            self.buffer.add(obs=self.obs, actions=action, rewards=torch.from_numpy(buf.reward),
                            terminated=torch.from_numpy(buf.terminated.astype(np.float32)),
                            next_obs=torch.from_numpy(next_obs), ended=torch.from_numpy(ended))
            self.obs = torch.from_numpy(obs).to(self.device)
            if self.model.obs_norm is not None:
                self.model.obs_norm.update(self.obs)
            self.steps += n
        return self.train_freq * n

    def update(self, stage: int) -> dict[str, float] | None:
        """``gradient_steps`` updates once ``learning_starts`` env steps were collected; every ``LOG_EVERY``
        of them, their averaged loss terms (else None: one host sync per record, not per step)."""
        if self.steps < self.learning_starts:
            return None
        for _ in range(self.gradient_steps):
            batch = self.buffer.sample(self.batch_size, self.generator)
            batch["obs"] = self.model.normalize(batch["obs"])
            batch["next_obs"] = self.model.normalize(batch["next_obs"])
            for k, v in self.gradient_step(batch).items():
                self._sums[k] = self._sums[k] + v if k in self._sums else v
                self._counts[k] = self._counts.get(k, 0) + 1
            self.updates += 1
            self._summed += 1
        if self._summed < LOG_EVERY:
            return None
        out = {k: float(v) / self._counts[k] for k, v in self._sums.items()}
        self._sums, self._counts, self._summed = {}, {}, 0
        return out

    def collected_steps(self, stage: int) -> int:
        return self.train_freq * self.obs.shape[0]

    def gradient_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def explore(self, obs_n: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def params(self, key: str) -> list[nn.Parameter]:
        return self.optimizers[key].param_groups[0]["params"]

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        """One optimizer step on ``loss``'s gradients of ``params`` alone: a loss that reads other networks
        (the actor's reads the critics) computes no weight gradients for them."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        optimizer.step()

    @torch.no_grad()
    def polyak(self, online: nn.Module, target: nn.Module) -> None:
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), self.tau)

    # -- checkpoint -------------------------------------------------------------------------------

    def rank_state(self) -> Any:
        return None

    def state_dict(self, rank_states: list[Any]) -> dict[str, Any]:
        """Everything but the buffer's rows (the run loop writes those as segment files)."""
        return {
            "target": self.target.state_dict(),
            "optimizer": {k: o.state_dict() for k, o in self.optimizers.items()},
            "lr_scheduler": {k: s.state_dict() for k, s in self.schedulers.items() if s is not None},
            "generator": self.generator.get_state(),
            "offpolicy": {"steps": self.steps, "updates": self.updates, "buffer_added": self.buffer.added,
                          "sums": {k: v.clone() for k, v in self._sums.items()}, "counts": dict(self._counts),
                          "summed": self._summed,
                          **self.extra_state()},
        }

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, ckpt: dict[str, Any], path: Any) -> None:
        if "offpolicy" not in ckpt:
            raise CheckpointError(f"{path} was saved by another algorithm (no replay state); resume it with the "
                                  "algo it trained with")
        self.target.load_state_dict(ckpt["target"])
        for k, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizer"][k])
        for k, s in self.schedulers.items():
            if s is not None and k in ckpt["lr_scheduler"]:
                s.load_state_dict(ckpt["lr_scheduler"][k])
        self.generator.set_state(ckpt["generator"])
        state = ckpt["offpolicy"]
        self.steps, self.updates, self.buffer.added = state["steps"], state["updates"], state["buffer_added"]
        self._sums, self._counts, self._summed = dict(state["sums"]), dict(state["counts"]), state["summed"]
        self.load_extra_state(state)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
