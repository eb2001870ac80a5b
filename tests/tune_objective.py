"""A fast stand-in for a trial's training runs (the tuner's runner): each seed's "run" validates every 100 env
steps up to 1,000, its reward a known function of the parameters, and resumes from the validations it wrote
(its checkpoints), and stops at its next validation on a signal (preemption). Every step it does is appended to ``work.log`` beside the sweep's trials, to count work
done twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rl_core.markers import PRUNE
from rl_core.tracking.report import read_valid
from rl_core.tune.runs import RunsStopped

STEPS, EVERY = 1000, 100


def reward(params: dict[str, float], seed: int, steps: int) -> float:
    lr = float(params.get("pipeline.optimizer.lr", 1e-3))
    return -1e6 * (lr - 1e-3) ** 2 + 0.01 * steps * (1 + lr * 100) + 0.1 * seed


class FastRuns:
    def __init__(self, base: list[str], delay_s: float = 0.02, at_once: int = 0) -> None:
        self.base, self.delay_s, self.stopped = base, delay_s, False

    def signal(self, signum: int) -> None:
        self.stopped = True  # as the real runs do: save at the next validation and stop


    def run(self, trial_dir: Path, overrides: list[str], seeds: list[int], watch) -> dict:
        params = {o.split("=", 1)[0]: float(o.split("=", 1)[1]) for o in overrides}
        trial_dir.mkdir(parents=True, exist_ok=True)
        work = trial_dir.parent.parent / "work.log"
        dirs = {s: trial_dir / f"seed_{s}" for s in seeds}
        for d in dirs.values():
            d.mkdir(exist_ok=True)
            (d / PRUNE).unlink(missing_ok=True)
        pruned = False
        while True:
            curves = {s: read_valid(d / "valid.json") for s, d in dirs.items()}
            if pruned or all(c and c[-1]["training_steps"] >= STEPS for c in curves.values()):
                return curves
            if self.stopped:
                raise RunsStopped(f"{trial_dir} stopped on a signal")
            if watch(curves):
                pruned = True  # each seed stops at its next validation
            for s, d in dirs.items():
                done = curves[s][-1]["training_steps"] if curves[s] else 0
                if done < STEPS:
                    time.sleep(self.delay_s)
                    with open(work, "a") as f:
                        f.write(f"{trial_dir.name} {s} {done + EVERY}\n")
                    with open(d / "valid.json", "a") as f:
                        f.write(json.dumps({"training_steps": done + EVERY, "reward": reward(params, s, done + EVERY)}) + "\n")
