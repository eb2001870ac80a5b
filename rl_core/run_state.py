"""The run loop's counters and its window of train metrics, both saved in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rl_core.eval.evaluation import METRICS


@dataclass
class TrainState:
    """Counters saved in every checkpoint; all in env steps summed over samplers unless named otherwise."""

    total_steps: int = 0
    stage_index: int = 0
    stage_steps: int = 0
    rollouts: int = 0
    last_save_steps: int = 0
    last_log_steps: int = 0
    wall_s: float = 0.0  # seconds in train(), validation included, summed over resumes


class MetricWindow:
    """Episode metrics and loss terms accumulated between two train-log points."""

    def __init__(self) -> None:
        self.episodes: list[dict[str, float]] = []
        self.losses: list[dict[str, float]] = []
        self.steps = 0
        self.wall_s = 0.0
        self.collect_s = 0.0
        self.fills: list[float] = []  # with a straggler cut-off: steps collected / a whole rollout's, per rollout

    def summary(self, lr: float, stage: int, loss_name: str) -> dict[str, float]:
        out = {f"train/{k}": float(np.mean([e[k] for e in self.episodes])) for k in METRICS if self.episodes}
        for k in self.losses[0] if self.losses else ():
            name = "train/total_loss" if k == "total_loss" else f"train/{loss_name}/{k}"
            out[name] = float(np.mean([float(d[k]) for d in self.losses if k in d]))
        out["train/lr"] = lr
        out["train/pipeline_stage"] = float(stage)
        out["train/approx_fps"] = self.steps / max(self.wall_s, 1e-9)
        out["train/env_steps_per_s"] = self.steps / max(self.collect_s, 1e-9)
        if self.fills:
            out["train/rollout_fill"] = float(np.mean(self.fills))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "losses": self.losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes, self.losses = list(state["episodes"]), list(state["losses"])
