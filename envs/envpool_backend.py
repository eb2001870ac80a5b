"""Training samplers on envpool's C++ envs: one batched ``step`` for all of them (``env=*_envpool``).

envpool steps the whole batch in its own C++ threads, so there are no worker processes and no pipes.
What differs from the gymnasium samplers (``envs.samplers.Samplers``):

- Seeding: envpool seeds env ``i`` once with ``seed + i`` and each episode continues that env's RNG; there are
  no per-episode env seeds, so the episode metrics carry ``seed: None``.
- Resume: an envpool env's state cannot be saved. A resumed run starts new episodes, with envpool re-seeded
  from the run seed and the number of episodes already played, so it is deterministic but not the same
  stream as an uninterrupted run (the gymnasium backend resumes bit-identically).
- Validation, test and videos always use gymnasium's env on the fixed seeds, so their numbers are
  comparable across backends.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import numpy as np

from envs.factory import GymTaskFactory
from envs.samplers import StepBuffers
from envs.task import action_transform


class EnvPoolSamplers:
    """``num_samplers`` training envs of ``env_id`` in one envpool batch; same interface as ``Samplers``.

    Args:
        env_id: an envpool id (``LunarLanderContinuous-v2``).
        run_seed: seeds the batch (with the number of episodes played before, on resume).
        num_threads: envpool's C++ threads; 0 = one per env, up to the cores.
        success_threshold: an episode succeeds when its return is strictly above this.
        max_episode_steps: the time limit (gymnasium's for the same task).
        transform: what the env receives for the policy's actions ``[N, A]`` (``envs.task.action_transform``).
    """

    def __init__(self, env_id: str, num_samplers: int, run_seed: int, num_threads: int = 0,
                 success_threshold: float = 0.0, max_episode_steps: int = 1000,
                 transform: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
        import envpool  # optional dependency: only this backend needs it

        self._make = lambda seed: envpool.make_gymnasium(env_id, num_envs=num_samplers, batch_size=num_samplers,
                                                         seed=seed, num_threads=num_threads,
                                                         max_episode_steps=max_episode_steps)
        self.num_samplers, self.run_seed, self.success_threshold = num_samplers, run_seed, success_threshold
        self.transform = transform
        self.env = self._make(self._seed(0))
        obs_dim = int(np.prod(self.env.observation_space.shape))
        action_dim = int(np.prod(self.env.action_space.shape))
        self.buf = StepBuffers.view(StepBuffers.allocate(None, num_samplers, obs_dim, action_dim))
        self.ep_return = np.zeros(num_samplers, np.float64)
        self.ep_length = np.zeros(num_samplers, np.int64)
        self.episodes_started = 0

    def _seed(self, episodes_before: int) -> int:
        return int(np.random.SeedSequence([self.run_seed, episodes_before]).generate_state(1)[0] % (2**31 - 1))

    def reset(self) -> np.ndarray:
        """Start an episode in every env; returns obs ``[N, D]``."""
        obs, _ = self.env.reset()
        self.buf.obs[:] = obs
        self.buf.active[:] = True
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        self.episodes_started += self.num_samplers
        return self.buf.obs

    def step(self, actions: np.ndarray) -> list[dict[str, Any]]:
        """Step all envs with ``actions`` ``[N, A]``; results land in :attr:`buf`, as for ``Samplers.step``.

        An env whose episode ended is reset at once, so ``buf.obs`` is always an observation to act on
        (envpool would otherwise spend the next step on its own reset, ignoring that step's action).
        """
        buf = self.buf
        buf.actions[:] = actions
        obs, reward, terminated, truncated, _ = self.env.step(self.transform(buf.actions))
        buf.reward[:] = reward
        buf.terminated[:] = terminated
        buf.truncated[:] = truncated & ~terminated
        buf.obs[:] = obs
        self.ep_return += reward
        self.ep_length += 1
        ended = np.flatnonzero(terminated | truncated)
        finished = []
        if len(ended):
            buf.final_obs[ended] = obs[ended]
            for i in ended:
                finished.append({"reward": float(self.ep_return[i]), "ep_length": int(self.ep_length[i]),
                                 "success": float(self.ep_return[i] > self.success_threshold), "seed": None,
                                 "sampler": int(i)})
            new_obs, _ = self.env.reset(ended)
            buf.obs[ended] = new_obs
            self.ep_return[ended] = 0.0
            self.ep_length[ended] = 0
            self.episodes_started += len(ended)
        return finished

    def state_dicts(self) -> list[dict[str, Any]]:
        """What a resume can use: the episode count that re-seeds envpool (its env state cannot be saved)."""
        return [{"backend": "envpool", "episodes_started": self.episodes_started}] * self.num_samplers

    def load_state_dicts(self, states: list[dict[str, Any]]) -> np.ndarray:
        """Re-seed from the saved episode count and start new episodes; returns obs ``[N, D]``."""
        if len(states) != self.num_samplers:
            raise ValueError(f"checkpoint holds {len(states)} sampler states, this run has {self.num_samplers} samplers")
        started = int(states[0].get("episodes_started", 0)) if states[0].get("backend") == "envpool" else 0
        self.env.close()
        self.env = self._make(self._seed(started))
        self.episodes_started = started
        return self.reset()

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def __enter__(self) -> "EnvPoolSamplers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EnvPoolTaskFactory(GymTaskFactory):
    """A task with envpool's C++ envs for training (``conf/env/*_envpool.yaml``); validation, test and videos
    stay on gymnasium's env of the same task and its fixed seeds. See ``EnvPoolSamplers`` above for what
    differs.

    Args:
        envpool_id: the envpool id of the same task.
        num_threads: envpool's C++ threads; 0 = one per env, up to the cores.
        (the rest as for :class:`GymTaskFactory`)
    """

    def __init__(self, env_id: str = "LunarLanderContinuous-v2", envpool_id: str = "LunarLanderContinuous-v2",
                 num_threads: int = 0, env_kwargs: dict[str, Any] | None = None, success_threshold: float = 0.0,
                 valid_episodes_per_sampler: int = 3, test_episodes_per_sampler: int = 3,
                 heldout_episodes_per_sampler: int = 100, action_handling: str = "clip",
                 solved_reward: float | None = None) -> None:
        try:
            import envpool
        except ImportError:
            raise ValueError("envpool_id: the envpool backend needs the envpool package: "
                             "pip install -c constraints.txt -e '.[envpool]'") from None
        if envpool_id not in envpool.list_all_envs():
            close = difflib.get_close_matches(envpool_id, envpool.list_all_envs(), n=3, cutoff=0.6)
            raise ValueError(f"envpool_id: envpool does not know {envpool_id!r}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        if num_threads < 0:
            raise ValueError(f"num_threads: must be >= 0, got {num_threads}")
        if env_kwargs:
            raise ValueError("env_kwargs: the envpool backend takes no gymnasium env kwargs")
        super().__init__(env_id, env_kwargs, success_threshold, valid_episodes_per_sampler, test_episodes_per_sampler,
                         heldout_episodes_per_sampler, action_handling, solved_reward)
        self.envpool_id, self.num_threads = envpool_id, num_threads
        spec = envpool.make_spec(envpool_id)
        ours = (spec.observation_space.shape, spec.action_space.shape)
        if ours != (self.observation_space.shape, self.action_space.shape):
            raise ValueError(f"envpool_id: {envpool_id}'s observation and action shapes {ours} differ from "
                             f"{self.env_id}'s {(self.observation_space.shape, self.action_space.shape)}")

    def train_samplers(self, num_samplers: int, num_workers: int, run_seed: int, start_method: str = "spawn",
                       timeout_s: float = 30.0, first_index: int = 0) -> Any:
        """All training envs in one envpool batch (``num_workers`` does not apply: envpool has its own threads);
        a rank's block (``first_index`` > 0) seeds its batch from the run seed and its first index."""
        if first_index:
            run_seed = int(np.random.SeedSequence([run_seed, first_index]).generate_state(1)[0] % (2**31 - 1))
        return EnvPoolSamplers(self.envpool_id, num_samplers, run_seed, self.num_threads, self.success_threshold,
                               self.max_episode_steps or 1000, action_transform(self.action_space, self.action_handling))
