"""Stable-Baselines3 PPO on HalfCheetah-v5 with the MuJoCo recipe's hyperparameters (conf/experiment/mujoco_ppo.yaml),
for the training throughput the bench's ``suite`` section sets beside ours (needs ``pip install -e '.[sb3]'``).

4 envs × 512 steps, minibatches of 64, 10 epochs, lr 3e-4 annealed to 0, GAE 0.95, γ 0.99, clip 0.2, grad-norm
0.5, separate 64×64 tanh nets, orthogonal init, log-std from 0, observations normalised and rewards scaled
(``VecNormalize``), actions clipped to the bounds (SB3's default). Prints one JSON line:
``{"train_steps_per_s", "steps", "threads"}``; the time is ``learn()`` alone.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 was SB3's faster on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = VecNormalize(make_vec_env("HalfCheetah-v5", n_envs=4, seed=args.seed), gamma=0.99)
    model = PPO("MlpPolicy", env, n_steps=512, batch_size=64, n_epochs=10, learning_rate=lambda f: 3e-4 * f,
                gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh,
                               "ortho_init": True, "log_std_init": 0.0},
                seed=args.seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    wall = time.perf_counter() - t0
    print(json.dumps({"train_steps_per_s": model.num_timesteps / wall, "steps": model.num_timesteps,
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
