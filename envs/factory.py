"""The env group's class (``conf/env/*.yaml``): builds the task samplers of one gymnasium env for every mode."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.samplers import Samplers
from envs.task import MODES, GymTaskSampler, action_transform, make_env, resolve_env_id

# Env seeds of the held-out episodes start here, far above any sampler's valid or test seeds.
HELDOUT_SEED_OFFSET = 1_000_000


class GymTaskFactory:
    """Builds the task samplers of one gymnasium env for every mode (``conf/env/*.yaml``).

    Args:
        env_id: gymnasium id; deprecated versions map to the newest (``-v2`` → ``-v3``).
        env_kwargs: extra ``gym.make`` arguments, e.g. ``{gravity: -9.0}``.
        success_threshold: an episode succeeds when its undiscounted return is strictly above this.
        valid_episodes_per_sampler: fixed-seed episodes each valid sampler plays (reference: 3).
        test_episodes_per_sampler: the same for test samplers (reference: 3).
        heldout_episodes_per_sampler: episodes of the held-out set (``test.episodes=heldout``), whose env seeds
            start at ``HELDOUT_SEED_OFFSET``: never played by validation, test or the bench's solve checks.
        action_handling: what the env receives for the policy's action: ``clip`` to the Box bounds (default;
            LunarLander clips itself the same way), ``rescale`` from [-1, 1] onto the bounds, ``none``.
        solved_reward: the mean episode reward at which the task counts as solved (the sweep report's
            time-to-threshold and the held-out checks; the run config's ``solved_reward``); None: none.

    Any gymnasium env with a flat Box observation and a Box action space trains; others are refused here.
    """

    def __init__(
        self,
        env_id: str = "LunarLanderContinuous-v2",
        env_kwargs: dict[str, Any] | None = None,
        success_threshold: float = 0.0,
        valid_episodes_per_sampler: int = 3,
        test_episodes_per_sampler: int = 3,
        heldout_episodes_per_sampler: int = 100,
        action_handling: str = "clip",
        solved_reward: float | None = None,
    ) -> None:
        for key, value in (("valid_episodes_per_sampler", valid_episodes_per_sampler),
                           ("test_episodes_per_sampler", test_episodes_per_sampler),
                           ("heldout_episodes_per_sampler", heldout_episodes_per_sampler)):
            if value < 1:
                raise ValueError(f"{key}: must be >= 1, got {value}")
        self.env_id = resolve_env_id(env_id)
        self.env_kwargs = dict(env_kwargs or {})
        self.success_threshold = float(success_threshold)
        self.episodes_per_sampler = {"valid": valid_episodes_per_sampler, "test": test_episodes_per_sampler,
                                     "heldout": heldout_episodes_per_sampler}
        try:
            probe = make_env(self.env_id, **self.env_kwargs)
        except TypeError as e:  # an env_kwargs key the env does not take
            raise ValueError(f"env_kwargs: {self.env_id}: {e}") from None
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        self.max_episode_steps = probe.spec.max_episode_steps if probe.spec is not None else None
        probe.close()
        check_spaces(self.env_id, self.observation_space, self.action_space)
        action_transform(self.action_space, action_handling)  # a bad value fails here, naming the key
        self.action_handling = action_handling
        self.solved_reward = solved_reward

    def task_seeds(self, mode: str, index: int) -> list[int] | None:
        """Fixed env seeds of sampler ``index`` in ``mode`` (``None`` for train): ``range(k*p, k*p + k)``, from
        ``HELDOUT_SEED_OFFSET`` on for the held-out set."""
        if mode == "train":
            return None
        k = self.episodes_per_sampler[mode]
        start = k * index + (HELDOUT_SEED_OFFSET if mode == "heldout" else 0)
        return list(range(start, start + k))

    def make_fixed(self, seeds: list[int], render: bool = False) -> GymTaskSampler:
        """A sampler that plays exactly the episodes with env ``seeds``, in order."""
        return GymTaskSampler(self.env_id, self.env_kwargs, self.success_threshold, seed=None,
                              task_seeds=list(seeds), render=render, action_handling=self.action_handling)

    def train_samplers(self, num_samplers: int, num_workers: int, run_seed: int, start_method: str = "spawn",
                       timeout_s: float = 30.0, first_index: int = 0) -> Any:
        """The training samplers: gymnasium envs in this process and ``num_workers`` worker processes.
        ``first_index``: the global index of the first (one rank's block of a multi-rank run), which seeds it."""
        source = OffsetSource(self, first_index) if first_index else self
        return Samplers(source, "train", num_samplers, num_workers, run_seed, start_method, timeout_s=timeout_s)

    def make(self, mode: str, index: int, run_seed: int, render: bool = False) -> GymTaskSampler:
        """Sampler ``index`` of ``mode``; its RNG is seeded from ``(run_seed, index)``."""
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
        return GymTaskSampler(
            self.env_id,
            self.env_kwargs,
            self.success_threshold,
            seed=np.random.SeedSequence([run_seed, index]).generate_state(1)[0].item(),
            task_seeds=self.task_seeds(mode, index),
            render=render,
            action_handling=self.action_handling,
        )


class OffsetSource:
    """``factory`` with its samplers' indices shifted by ``offset``: sampler ``i`` of a rank's block is the
    experiment's sampler ``offset + i``, seeded as such (picklable into worker processes)."""

    def __init__(self, factory: GymTaskFactory, offset: int) -> None:
        self.factory, self.offset = factory, offset
        self.observation_space, self.action_space = factory.observation_space, factory.action_space

    def make(self, mode: str, index: int, run_seed: int, render: bool = False) -> GymTaskSampler:
        return self.factory.make(mode, self.offset + index, run_seed, render)


def check_spaces(env_id: str, observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> None:
    """Refuse, in one line naming ``env_id``, an env the Gaussian MLP policy cannot train: it needs a flat Box
    observation (a vector; not an image, dict or discrete one) and a Box action space."""
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"env_id: {env_id} has action space {action_space}; this launcher trains continuous "
                         "(Box) actions with a Gaussian policy")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"env_id: {env_id} has observation space {observation_space}; the MLP policy needs a flat "
                         "Box (a vector): flatten it with a gymnasium wrapper in your own registered env")
