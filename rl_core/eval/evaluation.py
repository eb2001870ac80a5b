"""Evaluation on fixed tasks (env seeds), shared by validation and test mode.

Both play their tasks side by side through :func:`play_tasks`, so validation and test of the same
checkpoint on the same seeds give identical numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.factory import GymTaskFactory
from rl_core.eval.video import GridClip

METRICS = ("reward", "ep_length", "success")


@torch.no_grad()
def play_tasks(model: torch.nn.Module, factory: GymTaskFactory, tasks: list[tuple[int, int]], device: torch.device,
               deterministic: bool = True, generator: torch.Generator | None = None, clip: GridClip | None = None,
               batch: int = 32) -> list[dict[str, Any]]:
    """Play fixed tasks ``(sampler index, env seed)`` side by side, one env each, up to ``batch`` at once.

    The first ``len(clip.labels)`` tasks are rendered into ``clip``, so the video shows exactly the
    episodes that are scored. Returns one metrics dict per episode, in the order of ``tasks``.
    """
    episodes: list[dict[str, Any]] = []
    for start in range(0, len(tasks), batch):
        chunk = tasks[start:start + batch]
        film = clip if clip is not None and start == 0 else None
        n_film = len(film.labels) if film is not None else 0
        samplers = [factory.make_fixed([seed], render=i < n_film) for i, (_, seed) in enumerate(chunk)]
        try:
            obs = [s.reset() for s in samplers]
            done: list[dict[str, Any] | None] = [None] * len(chunk)
            if film is not None:
                film.add([s.render() for s in samplers[:n_film]])
            while any(d is None for d in done):
                live = [i for i, d in enumerate(done) if d is None]
                dist, _ = model(torch.from_numpy(np.stack([obs[i] for i in live])).to(device))
                actions = (model.mode(dist) if deterministic else model.sample(dist, generator)).cpu().numpy()
                for j, i in enumerate(live):
                    obs[i], _, _, _, metrics = samplers[i].step(actions[j])
                    if metrics is not None:
                        done[i] = {**metrics, "sampler": chunk[i][0]}
                if film is not None and not film.full:
                    film.add([samplers[i].render() if i in live else None for i in range(n_film)])
            episodes += done
        finally:
            for s in samplers:
                s.close()
    return episodes


def fixed_tasks(factory: GymTaskFactory, mode: str, num_samplers: int) -> list[tuple[int, int]]:
    """The reference's ``(sampler, env seed)`` tasks of ``mode``: sampler p plays ``range(k*p, k*p + k)``."""
    return [(p, seed) for p in range(num_samplers) for seed in factory.task_seeds(mode, p)]


def summarize(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Means and standard deviations of the episode metrics, plus ``num_tasks_evaled``."""
    out = {k: float(np.mean([e[k] for e in episodes])) for k in METRICS}
    out.update({f"{k}_std": float(np.std([e[k] for e in episodes])) for k in METRICS})
    out["num_tasks_evaled"] = float(len(episodes))
    return out
