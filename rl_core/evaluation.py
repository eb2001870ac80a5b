"""Deterministic evaluation on the fixed valid/test tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.tasks import GymTaskFactory
from envs.vector import Samplers

METRICS = ("reward", "ep_length", "success")


@torch.no_grad()
def evaluate(model: torch.nn.Module, factory: GymTaskFactory, mode: str, num_samplers: int,
             device: torch.device, deterministic: bool = True, generator: torch.Generator | None = None,
             ) -> list[dict[str, Any]]:
    """Play every fixed task of ``mode`` once; returns one metrics dict per episode, by sampler then seed.

    Deterministic agents act with the action mean (the reference's ``-e``); otherwise they sample.
    The same tasks (env seeds) are replayed on every call.
    """
    episodes: list[dict[str, Any]] = []
    with Samplers(factory, mode, num_samplers, num_workers=0, run_seed=0) as samplers:
        obs = samplers.reset()
        while samplers.buf.active.any():
            mean, _ = model(torch.from_numpy(obs).to(device))
            actions = mean if deterministic else model.sample(mean, generator)
            episodes += samplers.step(actions.cpu().numpy())
    return sorted(episodes, key=lambda e: (e["sampler"], e["seed"]))


def summarize(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Means of the episode metrics, plus ``num_tasks_evaled``."""
    out = {k: float(np.mean([e[k] for e in episodes])) for k in METRICS}
    out["num_tasks_evaled"] = float(len(episodes))
    return out
