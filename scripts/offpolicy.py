"""The bench's ``offpolicy`` section: SAC's training speed beside Stable-Baselines3's, where a gradient step's
time goes, what a checkpoint of the replay buffer costs, and the SAC and TD3 presets' scores over seeds.

* speed: training env steps/s after ``learning_starts`` on HalfCheetah-v5 with the ``mujoco_sac`` recipe
  (the command a user types, shortened to ``learning_starts`` + ``SPEED_STEPS``), and SB3 2.9's SAC at the same
  hyperparameters (``scripts/sb3_sac_speed.py``), one after the other in this process's run;
* profile: ms per SAC gradient step on HalfCheetah's sizes (17 obs, 6 actions, batch 256), and the share of
  each kind of op (torch.profiler, self CPU time);
* checkpoint: seconds and bytes of the replay part of a save (the rows since the last save: one
  ``save_interval``, 50k rows) and of a resume's load, with 100k and 1M transitions held;
* scores: each preset × seed to its budget; a run's score is its final checkpoint's mean over the env's
  held-out episodes (deterministic, env seeds validation never plays), IQM with a 95% bootstrap CI over seeds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from rl_core.tracking.report import bootstrap_ci, iqm  # noqa: E402
from suite import final_record  # noqa: E402 - scripts/suite.py

LEARNING_STARTS = 10_000
SPEED_STEPS = 3_000  # timed env steps after learning_starts, ours and SB3's
SPEED_TARGET = 2.5   # the issue's: ours >= 2.5x SB3's env steps/s
SAVE_ROWS = 50_000   # mujoco_sac's save_interval: the rows one save writes
# name -> (overrides, env steps, target on the held-out mean, published figure)
SCORES = {
    "pendulum_sac": (["env=pendulum", "experiment=pendulum_sac"], 20_000, -170, "RL Zoo SAC −157 ± 89 (one run)"),
    "pendulum_td3": (["env=pendulum", "experiment=pendulum_td3"], 20_000, None, "RL Zoo TD3 −152 ± 90 (one run)"),
    "lunar_lander_sac": (["experiment=lunar_lander_sac"], 300_000, 200, "RL Zoo SAC 260 ± 66 at 500k (one run)"),
    "lunar_lander_td3": (["experiment=lunar_lander_td3"], 300_000, None, "RL Zoo TD3 208 ± 68 at 300k (one run)"),
    "half_cheetah_sac": (["env=half_cheetah", "experiment=mujoco_sac"], 100_000, 6000,
                         "SAC reference curves (v4, 10 seeds) 6,156 ± 700 at 100k"),
    "half_cheetah_td3": (["env=half_cheetah", "experiment=mujoco_td3"], 100_000, None, "CleanRL TD3 (v4) 9,583 ± 126 at 1M"),
}
DEFAULT_SCORES = ("pendulum_sac", "pendulum_td3")
PARTS = ("speed", "profile", "checkpoint", "scores")


def speed(out: Path, launch: Callable, run_process: Callable, tb_scalars: Callable, have_sb3: bool) -> dict:
    """Env steps/s after learning_starts: ours through launch.py (the harmonic mean of the train/approx_fps of
    its windows past learning_starts, 1,000 steps each; ``tb_scalars(run_dir)`` reads them), SB3's from its own clock."""
    run_dir = out / "offpolicy" / "speed_sac"
    launch(run_dir, ["env=half_cheetah", "experiment=mujoco_sac", "seed=1",
                     f"pipeline.stages.0.max_stage_steps={LEARNING_STARTS + SPEED_STEPS}",
                     "pipeline.metric_accumulate_interval=1000", "pipeline.save_interval=1000000",
                     "pipeline.heldout_checks=false"])
    windows = [v for step, v in tb_scalars(run_dir)["train/approx_fps"] if step > LEARNING_STARTS]
    result = {"ours": {"train_steps_per_s": round(len(windows) / sum(1 / w for w in windows), 1),
                       "windows": [round(w, 1) for w in windows]}}
    if have_sb3:
        _, _, proc = run_process([sys.executable, str(ROOT / "scripts" / "sb3_sac_speed.py"),
                                  f"--timed-steps={SPEED_STEPS}", f"--learning-starts={LEARNING_STARTS}"])
        sb3 = json.loads(proc.stdout.splitlines()[-1])
        result["sb3"] = {"train_steps_per_s": round(sb3["train_steps_per_s"], 1)}
        result["ratio"] = round(result["ours"]["train_steps_per_s"] / result["sb3"]["train_steps_per_s"], 2)
    print(f"offpolicy speed, HalfCheetah-v5, SAC, UTD 1: {result}", flush=True)
    return result


def _sac(obs_dim: int = 17, action_dim: int = 6, buffer_size: int = 20_000, device: str = "cpu"):
    """A bound SAC on a buffer of random rows, learning from the first step (the profile's subject)."""
    from types import SimpleNamespace

    import hydra
    from omegaconf import OmegaConf

    from models.q_actor_critic import QActorCritic
    from rl_core.algo.sac import SAC

    machine = SimpleNamespace(compile=False, sync_frac=None, device=torch.device(device),
                              torch_threads=torch.get_num_threads())
    algo = SAC(buffer_size=buffer_size, learning_starts=0)
    algo.bind(QActorCritic(obs_dim, action_dim).to(device), hydra.utils.instantiate(OmegaConf.load(ROOT / "conf/pipeline/offpolicy.yaml")),
              machine, SimpleNamespace(active=False, world=1), 0)
    g = torch.Generator().manual_seed(0)
    for _ in range(buffer_size // 1000):
        algo.buffer.add(obs=torch.randn(1000, obs_dim, generator=g), actions=torch.rand(1000, action_dim, generator=g) * 2 - 1,
                        rewards=torch.randn(1000, generator=g), terminated=torch.zeros(1000),
                        next_obs=torch.randn(1000, obs_dim, generator=g))
    algo.steps = buffer_size
    return algo


def gradient_step_ms(device: str = "cpu", steps: int = 1000) -> float:
    """ms per SAC gradient step (HalfCheetah sizes, batch 256) on ``device``, after 200 warm-up steps."""
    algo = _sac(device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(200):
        algo.update(0)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        algo.update(0)
    sync()
    return (time.perf_counter() - t0) / steps * 1e3


def profile(steps: int = 1000) -> dict:
    """ms per SAC gradient step and the share of self CPU time by op (the top ones), HalfCheetah sizes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    ms = gradient_step_ms("cpu", steps)
    algo = _sac()
    for _ in range(50):  # warm-up
        algo.update(0)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(200):
            algo.update(0)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or "Optimizer" in e.key]
    total = sum(e.self_cpu_time_total for e in events)
    share = {e.key: round(100 * e.self_cpu_time_total / total, 1)
             for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]}
    result = {"ms_per_gradient_step": round(ms, 2), "threads": torch.get_num_threads(), "self_cpu_share_pct": share}
    print(f"offpolicy profile: {result}", flush=True)
    return result


def checkpoint_cost() -> dict:
    """The replay part of a checkpoint with HalfCheetah's rows (168 B): a save of one save_interval's new rows
    and a resume's load of every held row, at 100k and at 1M rows held; bytes on disk."""
    from rl_core.algo.replay import ReplayBuffer
    from rl_core.replay_files import ReplayFiles

    result = {}
    for held in (100_000, 1_000_000):
        buf = ReplayBuffer(1_000_000, 17, 6, torch.device("cpu"))
        with tempfile.TemporaryDirectory(dir=ROOT) as d:  # the disk runs write to, not a tmpfs
            files = ReplayFiles(Path(d))
            for start in range(0, held, SAVE_ROWS):
                n = min(SAVE_ROWS, held - start)
                rows = {k: torch.rand((n, *v.shape[1:])) for k, v in buf.data.items()}
                buf.add(**rows)
                t0 = time.perf_counter()
                entry = files.save(buf)
                save_s = time.perf_counter() - t0
            disk = sum(p.stat().st_size for p in Path(d).iterdir())
            t0 = time.perf_counter()
            ReplayFiles(Path(d)).load(ReplayBuffer(1_000_000, 17, 6, torch.device("cpu")), entry, Path(d))
            load_s = time.perf_counter() - t0
        result[f"{held:,} rows held"] = {"save_s": round(save_s, 3), "save_mb": round(SAVE_ROWS * buf.row_bytes / 1e6, 1),
                                         "resume_load_s": round(load_s, 2), "disk_mb": round(disk / 1e6, 1)}
    print(f"offpolicy checkpoint cost: {result}", flush=True)
    return result


def scores(out: Path, names: list[str], seeds: list[int], launch: Callable, extra: list[str] = ()) -> dict:
    """Each preset × seed to its budget (or its stop), ``extra`` overrides added; the held-out score of the last
    checkpoint."""
    results = {}
    for name in names:
        overrides, budget, target, published = SCORES[name]
        runs = []
        for seed in seeds:
            run_dir = out / "offpolicy" / f"{name}_{seed}"
            wall, _, _ = launch(run_dir, [*overrides, f"seed={seed}", f"pipeline.stages.0.max_stage_steps={budget}", *extra])
            runs.append(final_record(run_dir, seed, wall))
            print(f"offpolicy {name} seed {seed}: { {k: v for k, v in runs[-1].items() if k != 'curve'} }", flush=True)
        x = np.array([r["heldout_reward"] for r in runs])
        lo, hi = bootstrap_ci(x)
        results[name] = {"budget": budget, "target": target, "published": published, "runs": runs, "overrides": list(extra),
                         "iqm": round(iqm(x), 1), "ci": (round(lo, 1), round(hi, 1))}
    return results


def markdown(r: dict) -> str:
    out = ""
    s = r.get("speed")
    if s:
        out += (f"\nSAC on HalfCheetah-v5 (mujoco_sac: one env, UTD 1, batch 256, 256x256), training env steps/s after "
                f"learning_starts: ours {s['ours']['train_steps_per_s']}")
        if "sb3" in s:
            met = "met" if s["ratio"] >= SPEED_TARGET else "not met"
            out += f", SB3 2.9 {s['sb3']['train_steps_per_s']}: {s['ratio']}x (target >= {SPEED_TARGET}x: {met})"
        out += "\n"
    p = r.get("profile")
    if p:
        out += (f"\nSAC gradient step (HalfCheetah sizes, {p['threads']} threads): {p['ms_per_gradient_step']} ms; self CPU "
                "time: " + ", ".join(f"{k} {v}%" for k, v in p["self_cpu_share_pct"].items()) + "\n")
    c = r.get("checkpoint")
    if c:
        out += ("\nReplay buffer in checkpoints (HalfCheetah rows, 168 B; a save writes the 50k rows since the last):\n\n"
                "| held | save s | save MB | resume load s | on disk MB |\n|---|---|---|---|---|\n")
        out += "".join(f"| {k} | {v['save_s']} | {v['save_mb']} | {v['resume_load_s']} | {v['disk_mb']} |\n" for k, v in c.items())
    sc = r.get("scores")
    if sc:
        out += ("\nOff-policy presets (final held-out mean, deterministic; IQM and 95% bootstrap CI over seeds):\n\n"
                "| preset | budget | seeds | IQM [95% CI] | per seed (steps) | target | published |\n|---|---|---|---|---|---|---|\n")
        for name, v in sc.items():
            per = ", ".join(f"{x['heldout_reward']:,.0f} ({x['env_steps']:,})" for x in v["runs"])
            target = "—" if v["target"] is None else (f"≥ {v['target']:,}: " + ("met" if v["iqm"] >= v["target"] else "not met"))
            out += (f"| {name} | {v['budget']:,} | {len(v['runs'])} | {v['iqm']:,.1f} [{v['ci'][0]:,.1f}, {v['ci'][1]:,.1f}] "
                    f"| {per} | {target} | {v['published']} |\n")
    return out
