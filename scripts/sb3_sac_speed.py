"""Stable-Baselines3 SAC on HalfCheetah-v5 with the mujoco_sac recipe's hyperparameters, for the training
speed the bench's ``offpolicy`` section sets beside ours (needs ``pip install -e '.[sb3]'``).

One env, 256×256 ReLU actor and critics, batch 256, lr 3e-4, UTD 1 (train_freq 1, gradient_steps 1), buffer
1M, ``learning_starts`` 10k, τ 0.005, γ 0.99, automatic entropy. Prints one JSON line
``{"train_steps_per_s", "timed_steps", "threads"}``: env steps per second after ``learning_starts``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback


class Clock(BaseCallback):
    """The wall time when the first update is due (num_timesteps == learning_starts)."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start, self.t0 = start, None

    def _on_step(self) -> bool:
        if self.t0 is None and self.num_timesteps >= self.start:
            self.t0 = time.perf_counter()
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timed-steps", type=int, default=3000)
    parser.add_argument("--learning-starts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (ours uses one per core too)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = SAC("MlpPolicy", "HalfCheetah-v5", learning_rate=3e-4, buffer_size=1_000_000,
                learning_starts=args.learning_starts, batch_size=256, tau=0.005, gamma=0.99, train_freq=1,
                gradient_steps=1, policy_kwargs={"net_arch": [256, 256]}, seed=args.seed, device="cpu", verbose=0)
    clock = Clock(args.learning_starts)
    model.learn(total_timesteps=args.learning_starts + args.timed_steps, callback=clock)
    wall = time.perf_counter() - clock.t0
    print(json.dumps({"train_steps_per_s": (model.num_timesteps - args.learning_starts) / wall,
                      "timed_steps": model.num_timesteps - args.learning_starts, "threads": args.threads}))


if __name__ == "__main__":
    main()
