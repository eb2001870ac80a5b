"""Stable-Baselines3 PPO with RL Zoo's LunarLanderContinuous hyperparameters, under the bench's time-to-solve
protocol: the optional side-by-side anchor of ``make bench`` (``ARGS="--only sb3"``; needs ``pip install
-e '.[sb3]'``).

RL Zoo (``rl_zoo3/hyperparams/ppo.yml``): 16 envs, n_steps 1024, batch 64, 4 epochs, GAE λ 0.98, γ 0.999,
entropy 0.01, lr 3e-4, 64×64 Tanh nets, 1M steps. Training envs have ``render_mode=None``: SB3's
``make_vec_env`` would otherwise make them render, 3-7x slower. One torch thread, as SB3 is usually run on
a small CPU machine.

Every ``--eval-every`` env steps (summed over envs) it plays 10 deterministic episodes on env seeds 0-9,
side by side (the seeds our validation uses with ``env.valid_episodes_per_sampler=10``) and prints one JSON
line ``{"training_steps", "wall_s", "reward"}`` (``wall_s``: seconds since training started). When that mean
reaches ``--target`` it also plays the 100 held-out episodes (env seeds 1,000,000-1,000,099, as our
``pipeline.confirm_on_heldout`` does) and adds ``"heldout": {"reward", "wall_s"}``; it stops once those reach
the target too (``--no-heldout``: at the first 10-episode mean >= target, the earlier protocol).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

ENV_ID = "LunarLanderContinuous-v3"
EVAL_SEEDS = 10
HELDOUT_SEED_OFFSET, HELDOUT_EPISODES = 1_000_000, 100  # envs/factory.py: the same episodes as ours


class SolveCallback(BaseCallback):
    """Evaluates every ``every`` env steps; ends training at the first mean reward >= ``target`` (on the
    held-out episodes too, when ``heldout``)."""

    def __init__(self, every: int, target: float, heldout: bool = True) -> None:
        super().__init__()
        self.every, self.target, self.next_eval, self.heldout = every, target, every, heldout
        self.eval_env = make_vec_env(ENV_ID, n_envs=EVAL_SEEDS, env_kwargs={"render_mode": None})
        self.t0 = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.every
        reward = self._mean_reward(0, 1)
        entry = {"training_steps": self.num_timesteps, "wall_s": time.perf_counter() - self.t0, "reward": reward}
        solved = reward >= self.target
        if solved and self.heldout:
            heldout = self._mean_reward(HELDOUT_SEED_OFFSET, HELDOUT_EPISODES // EVAL_SEEDS)
            entry["heldout"] = {"reward": heldout, "wall_s": time.perf_counter() - self.t0}
            solved = heldout >= self.target
        print(json.dumps(entry), flush=True)
        return not solved

    def _mean_reward(self, first_seed: int, batches: int) -> float:
        """Mean return of ``batches`` × 10 deterministic episodes on env seeds ``first_seed`` onward."""
        rewards = []
        for b in range(batches):
            self.eval_env.seed(first_seed + b * EVAL_SEEDS)  # env i plays seed first + 10b + i, one episode each
            batch, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=EVAL_SEEDS, deterministic=True,
                                       return_episode_rewards=True)
            rewards += batch
        return float(sum(rewards) / len(rewards))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--eval-every", type=int, default=25_000)
    parser.add_argument("--target", type=float, default=200.0)
    parser.add_argument("--no-heldout", action="store_true", help="stop at the 10-episode solve (earlier protocol)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = make_vec_env(ENV_ID, n_envs=16, seed=args.seed, env_kwargs={"render_mode": None})
    model = PPO("MlpPolicy", env, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4,
                ent_coef=0.01, learning_rate=3e-4, seed=args.seed, device="cpu", verbose=0)
    model.learn(args.max_steps, callback=SolveCallback(args.eval_every, args.target, heldout=not args.no_heldout))


if __name__ == "__main__":
    main()
