"""One gymnasium env and its tasks (episodes), with the reference's seeding and episode metrics.

A *task* is one episode. A :class:`GymTaskSampler` owns one env and hands out tasks:

* ``train``: endless episodes; each reset draws a fresh env seed from the sampler's own RNG,
  which is seeded from the run seed and the sampler index.
* ``valid`` / ``test``: a fixed list of env seeds, ``range(k*p, k*p + k)`` for sampler ``p``
  with ``k`` episodes per sampler, played in order and identical for every checkpoint; the
  sampler is exhausted after its last one.

Episode metrics: ``reward`` (undiscounted return), ``ep_length`` (env steps) and ``success``
(1 if the return is above ``success_threshold``; the reference's generic fallback uses 0).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)

MODES = ("train", "valid", "test")
ACTION_HANDLING = ("none", "clip", "rescale")
MUJOCO_RENDER_SIZE = 240  # px, a side of a MuJoCo test video's frame (rl_core/eval/video.py tiles ~300 px wide)


def resolve_env_id(env_id: str) -> str:
    """Return the gymnasium id to make for ``env_id``.

    A deprecated version (the tutorial's ``LunarLanderContinuous-v2``) maps to the newest
    registered version with one log line; an unknown id raises ``ValueError`` naming close ids.
    ``module:Name-v0`` imports ``module`` first (a user's package that registers its env), as ``gym.make`` does.
    """
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"env_id: cannot import {module!r} for {env_id!r}: {e}") from None
        return f"{module}:{resolve_env_id(name)}"
    if env_id in gym.registry:
        return env_id
    ns, name, version = gym.envs.registration.parse_env_id(env_id)
    newest = gym.envs.registration.find_highest_version(ns, name)
    if newest is not None and version is not None and version < newest:
        new_id = gym.envs.registration.get_env_id(ns, name, newest)
        log.info("env id %s is deprecated in gymnasium; using %s", env_id, new_id)
        return new_id
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"env_id: gymnasium does not know {env_id!r}{hint}")


_mujoco_warnings_routed = False


def make_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """``gym.make``; for a MuJoCo env, MuJoCo's own warnings go to this module's log at debug level, not to
    stderr and a ``MUJOCO_LOG.TXT`` in the working folder (gymnasium's v5 models raise a harmless
    deprecation warning on every make)."""
    global _mujoco_warnings_routed
    spec = gym.registry.get(env_id.split(":")[-1])
    is_mujoco = spec is not None and "mujoco" in str(spec.entry_point)
    if is_mujoco and not _mujoco_warnings_routed:
        import mujoco

        mujoco.set_mju_user_warning(lambda message: log.debug("MuJoCo: %s", message))
        _mujoco_warnings_routed = True
    mujoco_video = is_mujoco and render_mode == "rgb_array"
    if mujoco_video:  # rendered at the size the clip shows (the 480x480 default was halved in the grid)
        kwargs = {"width": MUJOCO_RENDER_SIZE, "height": MUJOCO_RENDER_SIZE, **kwargs}
    env = gym.make(env_id, render_mode=render_mode, **kwargs)
    if mujoco_video:
        # software EGL (Mesa's llvmpipe) spends most of a frame on 4x multisampling and the shadow map,
        # whatever the frame's size (figures: docs/performance.md, "MuJoCo test videos")
        quality = env.unwrapped.model.vis.quality
        quality.offsamples, quality.shadowsize = 0, 0
    return env


def action_transform(space: gym.spaces.Box, handling: str) -> Callable[[np.ndarray], np.ndarray]:
    """What the env receives for a policy's action ``[..., A]``: ``none`` the action as is (LunarLander clips
    itself), ``clip`` clipped to the Box bounds, ``rescale`` mapped from [-1, 1] onto [low, high], then clipped.
    The rollout keeps the policy's own sample for the loss; MuJoCo charges control cost on what it receives."""
    if handling not in ACTION_HANDLING:
        raise ValueError(f"action_handling: must be one of {ACTION_HANDLING}, got {handling!r}")
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    if handling == "none":
        return lambda a: a
    if handling == "clip":
        return lambda a: np.clip(a, low, high)
    return lambda a: np.clip(low + (np.asarray(a, np.float32) + 1.0) * 0.5 * (high - low), low, high)


class GymTaskSampler:
    """One env and its stream of tasks (episodes).

    Args:
        env_id: a gymnasium id (already resolved by :func:`resolve_env_id`).
        env_kwargs: extra ``gym.make`` arguments.
        success_threshold: an episode succeeds when its return is strictly above this.
        seed: seeds this sampler's RNG (train mode); ignored when ``task_seeds`` is given.
        task_seeds: fixed env seeds, one per episode (valid/test); ``None`` means endless train tasks.
        render: create the env with ``render_mode="rgb_array"`` (slower: only for videos).
        action_handling: what the env receives for an action (:func:`action_transform`).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        success_threshold: float,
        seed: int | None,
        task_seeds: list[int] | None,
        render: bool = False,
        action_handling: str = "clip",
    ) -> None:
        self.env = make_env(env_id, render_mode="rgb_array" if render else None, **env_kwargs)
        self.transform = action_transform(self.env.action_space, action_handling)
        self.success_threshold = success_threshold
        self.task_seeds = task_seeds
        self.rng = np.random.default_rng(seed)
        self.next_task = 0  # index into task_seeds
        self.episode_seed: int | None = None
        self.actions: list[np.ndarray] = []  # this episode's actions, replayed on resume
        self.ep_return = 0.0
        self.ep_length = 0

    def reset(self) -> np.ndarray | None:
        """Start the next task; returns its first observation, or ``None`` when exhausted."""
        if self.task_seeds is None:
            seed = int(self.rng.integers(2**31 - 1))
        elif self.next_task < len(self.task_seeds):
            seed = self.task_seeds[self.next_task]
            self.next_task += 1
        else:
            self.episode_seed = None
            return None
        return self._start(seed)

    def _start(self, seed: int) -> np.ndarray:
        self.episode_seed = seed
        self.actions = []
        self.ep_return = 0.0
        self.ep_length = 0
        obs, _ = self.env.reset(seed=seed)
        return np.asarray(obs, dtype=np.float32)  # MuJoCo's are float64; the policy takes float32

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict | None]:
        """Step the env with a policy's action (the env receives ``action_handling``'s transform of it; the
        episode's stored actions, replayed on resume, are the policy's own).

        Returns ``(obs, reward, terminated, truncated, metrics)``; ``metrics`` is the finished
        episode's dict (else ``None``) and ``obs`` is then the episode's final observation.
        """
        obs, reward, terminated, truncated, _ = self.env.step(self.transform(action))
        self.actions.append(np.array(action, dtype=np.float32))
        self.ep_return += float(reward)
        self.ep_length += 1
        metrics = None
        if terminated or truncated:
            metrics = {
                "reward": self.ep_return,
                "ep_length": self.ep_length,
                "success": float(self.ep_return > self.success_threshold),
                "seed": self.episode_seed,
            }
        return np.asarray(obs, dtype=np.float32), float(reward), bool(terminated), bool(truncated), metrics

    def render(self) -> np.ndarray:
        """The current frame, ``[H, W, 3]`` uint8 (needs ``render=True``)."""
        return self.env.render()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this exact episode stream in a new process.

        Box2D worlds cannot be pickled, so the episode is stored as its seed and the actions
        taken so far; :meth:`load_state_dict` replays them to reach the same env state.
        """
        actions = np.stack(self.actions) if self.actions else np.zeros((0,) + self.env.action_space.shape, np.float32)
        return {
            "rng": self.rng.bit_generator.state,
            "next_task": self.next_task,
            "episode_seed": self.episode_seed,
            "actions": actions.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> np.ndarray | None:
        """Restore :meth:`state_dict`; returns the current observation (``None`` if exhausted)."""
        self.rng.bit_generator.state = state["rng"]
        self.next_task = state["next_task"]
        self.episode_seed = state["episode_seed"]
        if self.episode_seed is None:
            return None
        obs = self._start(self.episode_seed)
        for action in state["actions"]:
            obs, *_ = self.step(np.asarray(action, dtype=np.float32))
        return obs

    def close(self) -> None:
        self.env.close()


class TaskSource(Protocol):
    """What builds samplers (``envs.factory.GymTaskFactory``), as the sampler groups see it."""

    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space

    def make(self, mode: str, index: int, run_seed: int, render: bool = False) -> GymTaskSampler: ...
