"""The training pipeline: stages of losses, each for a number of env steps, and shared settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

STAGE_SETTINGS = ("num_steps", "update_repeats", "num_mini_batch", "minibatch_size", "gamma", "use_gae",
                  "gae_lambda", "bootstrap_truncation", "max_grad_norm")


@dataclass(frozen=True)
class StageSettings:
    """The rollout and update settings in force during one stage."""

    num_steps: int
    update_repeats: int
    num_mini_batch: int
    minibatch_size: int | None
    gamma: float
    use_gae: bool
    gae_lambda: float
    bootstrap_truncation: bool
    max_grad_norm: float


class PipelineStage:
    """One stage: which losses train for how many env steps, and which settings it overrides.

    A stage ends at the start of the first rollout at which it has run ``max_stage_steps`` env steps
    (summed over samplers), so it can overshoot by up to one rollout, as in the reference.
    ``None`` for a setting means the pipeline's value.
    """

    def __init__(self, max_stage_steps: int, loss_names: list[str] | None = None, num_steps: int | None = None,
                 update_repeats: int | None = None, num_mini_batch: int | None = None,
                 minibatch_size: int | None = None, gamma: float | None = None,
                 use_gae: bool | None = None, gae_lambda: float | None = None,
                 bootstrap_truncation: bool | None = None, max_grad_norm: float | None = None) -> None:
        if max_stage_steps <= 0:
            raise ValueError(f"max_stage_steps: must be > 0, got {max_stage_steps}")
        self.max_stage_steps = max_stage_steps
        self.loss_names = loss_names
        self.overrides = {k: v for k, v in locals().items() if k in STAGE_SETTINGS and v is not None}


class TrainingPipeline:
    """Stages plus the settings they share (``conf/pipeline/*.yaml``).

    Args:
        stages: run in order; the run ends after the last.
        optimizer: a partial taking the model's parameters (e.g. Adam with its lr).
        lr_scheduler: a partial taking the optimizer (e.g. ``EnvStepLR`` with ``LinearDecay``), or None.
        num_steps: rollout length per sampler; one rollout is ``num_steps × samplers`` env steps.
        update_repeats: passes over each rollout.
        num_mini_batch: minibatches per pass, split by sampler (the reference's way).
        minibatch_size: instead, shuffle the rollout's ``num_steps × samplers`` transitions each pass and cut
            them into minibatches of this many (the last may be smaller); None: split by sampler.
        gamma, use_gae, gae_lambda, bootstrap_truncation: see ``rl_core.algo.ppo.compute_returns``.
        max_grad_norm: L2 gradient-norm clip.
        save_interval: checkpoint once this many env steps passed since the last (and at the end).
        metric_accumulate_interval: log train metrics once this many env steps accumulated.
        validate_initial_weights: also validate the untrained model, at step 0.
        stop_at_valid_reward: end the run early at the first validation whose mean reward reaches this
            (time-to-solve runs); None trains every stage to its end.
        confirm_on_heldout: a validation that reaches ``stop_at_valid_reward`` also plays the held-out episodes
            (``env.heldout_episodes_per_sampler``, seeds no validation plays), logged as ``heldout/*`` and in
            ``valid.json``; the run stops only once their mean reaches the target too.
        reward_scaling: divide training rewards by the running std of the discounted return
            (:class:`rl_core.algo.reward_scaling.RewardScaler`); its state is saved in checkpoints.
        reward_clip: clip scaled rewards to ±this.
        heldout_checks: also play the held-out episodes on the first checkpoint whose validation reaches the
            run's ``solved_reward`` and on the final checkpoint (claims are made on them: the sweep report's
            held-out columns); ~1-2 s per 100 LunarLander episodes.
    """

    def __init__(self, stages: list[PipelineStage], optimizer: Callable[..., torch.optim.Optimizer],
                 lr_scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
                 num_steps: int = 2000, update_repeats: int = 80, num_mini_batch: int = 1,
                 minibatch_size: int | None = None, gamma: float = 0.99, use_gae: bool = False,
                 gae_lambda: float = 0.95, bootstrap_truncation: bool = False,
                 max_grad_norm: float = 100.0, save_interval: int = 200_000,
                 metric_accumulate_interval: int = 50_000, validate_initial_weights: bool = False,
                 stop_at_valid_reward: float | None = None, confirm_on_heldout: bool = False,
                 reward_scaling: bool = False, reward_clip: float = 10.0, heldout_checks: bool = True) -> None:
        args = dict(locals())
        if not stages:
            raise ValueError("stages: needs at least one stage")
        for key in ("num_steps", "update_repeats", "num_mini_batch", "save_interval", "metric_accumulate_interval"):
            if args[key] <= 0:
                raise ValueError(f"{key}: must be > 0, got {args[key]}")
        if not 0 < gamma <= 1 or not 0 <= gae_lambda <= 1:
            raise ValueError(f"gamma, gae_lambda: must lie in (0, 1] and [0, 1], got {gamma}, {gae_lambda}")
        self.stages = stages
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.save_interval = save_interval
        self.metric_accumulate_interval = metric_accumulate_interval
        self.validate_initial_weights = validate_initial_weights
        self.stop_at_valid_reward = stop_at_valid_reward
        if confirm_on_heldout and stop_at_valid_reward is None:
            raise ValueError("confirm_on_heldout: needs stop_at_valid_reward, the reward to confirm")
        self.confirm_on_heldout = confirm_on_heldout
        self.heldout_checks = heldout_checks
        if reward_clip <= 0:
            raise ValueError(f"reward_clip: must be > 0, got {reward_clip}")
        self.reward_scaling, self.reward_clip = reward_scaling, reward_clip
        self.defaults = {k: args[k] for k in STAGE_SETTINGS}
        for i, stage in enumerate(stages):
            settings = self.settings(i)
            if settings.num_mini_batch < 1 or settings.num_steps < 1 or settings.update_repeats < 1:
                raise ValueError(f"stages[{i}]: num_steps, update_repeats and num_mini_batch must be >= 1")
            if settings.minibatch_size is not None and settings.minibatch_size < 1:
                raise ValueError(f"minibatch_size: must be >= 1, got {settings.minibatch_size} (stages[{i}])")

    @property
    def total_steps(self) -> int:
        """Env steps of all stages together (before any overshoot)."""
        return sum(s.max_stage_steps for s in self.stages)

    def settings(self, stage_index: int) -> StageSettings:
        merged = {**self.defaults, **self.stages[stage_index].overrides}
        return StageSettings(**{f.name: merged[f.name] for f in fields(StageSettings)})
