"""The bench's ``suite`` section: continuous-control presets × seeds, each to its step budget, against the
published PPO figures; and Stable-Baselines3 PPO with the same hyperparameters on HalfCheetah, side by side.

A run's score is its final checkpoint's mean reward over the env's held-out episodes (deterministic actions,
env seeds no validation plays; ``env.heldout_episodes_per_sampler``, 30 for these presets), summarised over
seeds as IQM with a 95% bootstrap CI. Results go to ``bench_results/suite/`` and the bench's JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_core.tracking.report import bootstrap_ci, iqm  # noqa: E402

# env preset -> (recipe, env steps, published PPO figures at that budget (REFERENCE.md §6), the target)
SUITE = {
    "half_cheetah": ("mujoco_ppo", 1_000_000, "CleanRL (v4) 1,442.6 ± 46.0; AllenAct DD-PPO (v2) 1,741; "
                     "baselines PPO2 1,795; RL Zoo tuned (v3) 5,819 ± 664", 1800),
    "hopper": ("mujoco_ppo", 1_000_000, "CleanRL (v4) 2,382.9 ± 271.7; AllenAct DD-PPO (v2) 2,266; "
               "RL Zoo (v3) 2,410 ± 10", 2400),
    "walker2d": ("mujoco_ppo", 1_000_000, "CleanRL (v4) 2,288.0 ± 571.8; RL Zoo (v3) 3,479 ± 822", 2300),
    "pendulum": ("classic_control_ppo", 200_000, "RL Zoo (gSDE) −172 ± 104 at 100k", None),
    "mountain_car_continuous": ("mountain_car_ppo", 100_000, "RL Zoo (PPO, gSDE) 88–95", 90),
    "bipedal_walker": ("bipedal_walker_ppo", 5_000_000, "RL Zoo 287.9 ± 2.4 at 5M", 250),
}
DEFAULT_ENVS = ("half_cheetah", "hopper", "walker2d")
# SB3 beside ours on HalfCheetah-v5 for a fixed budget: the MuJoCo recipe's hyperparameters in both
SB3_STEPS = 100_000


def run_suite(out: Path, envs: list[str], seeds: list[int],
              launch: Callable[[Path, list[str]], tuple[float, int, object]], envpool: bool, jobs: int = 1) -> dict:
    """Train every env × seed; returns {env: summary}. ``launch(run_dir, overrides)`` runs launch.py. With
    ``envpool`` the training samplers are the env's envpool twin (2-3x faster MuJoCo stepping); validation and
    the held-out score stay on gymnasium's env either way. ``jobs`` runs at a time: the scores do not depend
    on it (a run's floats do not depend on timing), its wall times do, so they are marked as shared."""
    from concurrent.futures import ThreadPoolExecutor

    def one(env: str, seed: int) -> dict:
        recipe, steps = SUITE[env][:2]
        run_dir = out / "suite" / f"{env}_{seed}"
        wall, _, _ = launch(run_dir, [f"env={env}_envpool" if envpool else f"env={env}", f"experiment={recipe}",
                                      f"seed={seed}", f"pipeline.stages.0.max_stage_steps={steps}"])
        record = final_record(run_dir, seed, wall)
        record = {**record, "wall_s_per_1M": round(wall / record["env_steps"] * 1e6, 1)}
        print(f"suite {env} seed {seed}: { {k: v for k, v in record.items() if k != 'curve'} }", flush=True)
        return record

    with ThreadPoolExecutor(jobs) as pool:
        futures = {env: [pool.submit(one, env, seed) for seed in seeds] for env in envs}
        results = {env: {**summarize(env, [f.result() for f in fs]), "training_envs": "envpool" if envpool else "gymnasium",
                         "concurrent_runs": jobs}
                   for env, fs in futures.items()}
    return results


def final_record(run_dir: Path, seed: int, wall: float) -> dict:
    """A finished run's figures from its ``valid.json``: the last checkpoint's steps, validation and held-out
    rewards, the process's wall seconds and the validation curve."""
    valid = [json.loads(line) for line in (run_dir / "valid.json").read_text().splitlines()]
    final = valid[-1]
    return {"seed": seed, "env_steps": final["training_steps"], "valid_reward": round(final["reward"], 1),
            "heldout_reward": round(final["heldout"]["reward"], 1),
            "heldout_episodes": int(final["heldout"]["num_tasks_evaled"]), "process_wall_s": round(wall, 1),
            "curve": [(v["training_steps"], round(v["reward"], 1)) for v in valid]}


def summarize(env: str, runs: list[dict]) -> dict:
    recipe, steps, published, target = SUITE[env]
    scores = np.array([r["heldout_reward"] for r in runs])
    lo, hi = bootstrap_ci(scores)
    return {"recipe": recipe, "budget": steps, "published": published, "target": target, "runs": runs,
            "iqm": round(iqm(scores), 1), "ci": (round(lo, 1), round(hi, 1)),
            "median_wall_s_per_1M": float(np.median([r["wall_s_per_1M"] for r in runs]))}


def sb3_side_by_side(out: Path, launch: Callable, run_process: Callable, seed: int = 1) -> dict:
    """Training env steps/s over ``SB3_STEPS`` on HalfCheetah-v5, ours (gymnasium and envpool samplers) and
    SB3's, with the MuJoCo recipe's hyperparameters in both."""
    result = {}
    for name, env in (("ours, gymnasium envs", "half_cheetah"), ("ours, envpool", "half_cheetah_envpool")):
        run_dir = out / "suite" / f"throughput_{env}"
        wall, _, _ = launch(run_dir, [f"env={env}", "experiment=mujoco_ppo", f"seed={seed}",
                                      f"pipeline.stages.0.max_stage_steps={SB3_STEPS}",
                                      f"pipeline.save_interval={SB3_STEPS}", "pipeline.heldout_checks=false"])
        valid = [json.loads(line) for line in (run_dir / "valid.json").read_text().splitlines()]
        train_s = valid[-1]["wall_s"]  # training time up to the final checkpoint (no start-up)
        result[name] = {"train_steps_per_s": round(valid[-1]["training_steps"] / train_s), "process_wall_s": round(wall, 1)}
    t0 = time.perf_counter()
    _, _, proc = run_process([sys.executable, str(ROOT / "scripts" / "sb3_suite.py"), f"--steps={SB3_STEPS}",
                              f"--seed={seed}"])
    sb3 = json.loads(proc.stdout.splitlines()[-1])
    result["SB3 PPO, same hyperparameters"] = {"train_steps_per_s": round(sb3["train_steps_per_s"]),
                                               "process_wall_s": round(time.perf_counter() - t0, 1)}
    for name, r in result.items():
        print(f"suite throughput, HalfCheetah-v5, {SB3_STEPS:,} steps, {name}: {r}", flush=True)
    return result


def plot(results: dict, png: Path) -> None:
    """Validation reward against env steps per env: each seed thin, their mean thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(results)
    fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.6), dpi=100, squeeze=False)
    for ax, env in zip(axes[0], envs):
        curves = [dict(r["curve"]) for r in results[env]["runs"]]
        for c in curves:
            ax.plot(list(c), list(c.values()), color="C0", lw=0.8, alpha=0.4)
        common = sorted(set.intersection(*(set(c) for c in curves)))
        ax.plot(common, [np.mean([c[s] for c in curves]) for s in common], color="C0", lw=2, label="mean over seeds")
        if results[env]["target"] is not None:
            ax.axhline(results[env]["target"], color="grey", ls="--", lw=1, label="target")
        ax.set_title(f"{env} ({results[env]['recipe']})", fontsize=9)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation reward (3 episodes)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def markdown(results: dict, throughput: dict | None) -> str:
    out = ("\nContinuous-control suite (score: final checkpoint's mean over its held-out episodes, deterministic; "
           "IQM and 95% bootstrap CI over seeds):\n\n| env | recipe, training envs | env steps | seeds | IQM [95% CI] | per seed "
           "| target | published PPO | wall s per 1M steps |\n|---|---|---|---|---|---|---|---|---|\n")
    for env, s in results.items():
        per = ", ".join(f"{r['heldout_reward']:,.0f}" for r in s["runs"])
        target = "—" if s["target"] is None else (f"≥ {s['target']:,}: " + ("met" if s["iqm"] >= s["target"] else "not met"))
        out += (f"| {env} | {s['recipe']}, {s.get('training_envs', 'gymnasium')} | {s['budget']:,} | {len(s['runs'])} | {s['iqm']:,.1f} "
                f"[{s['ci'][0]:,.1f}, {s['ci'][1]:,.1f}] | {per} | {target} | {s['published']} "
                f"| {s['median_wall_s_per_1M']:.0f}{' (' + str(s['concurrent_runs']) + ' runs at a time)' if s.get('concurrent_runs', 1) > 1 else ''} |\n")
    if throughput:
        out += (f"\nTraining throughput on HalfCheetah-v5, {SB3_STEPS:,} env steps, the MuJoCo recipe's hyperparameters:"
                "\n\n| trainer | training env steps/s |\n|---|---|\n")
        out += "".join(f"| {name} | {r['train_steps_per_s']:,} |\n" for name, r in throughput.items())
    return out
