"""Throughput and wall-time figures for the default layout; `make bench` (add ARGS=--quick for a short run).

Prints and writes ``bench_results/bench.json``:
* env-only steps/s: the default samplers stepped with random actions, no policy (the floor);
* training steps/s: a training run's env steps per wall second (collection + updates), with
  the collection rate and the share of time spent in each;
* the full default run: wall time, and validation reward at each checkpoint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def env_only(num_samplers: int, num_workers: int, steps: int = 4000) -> float:
    """Env steps/s (summed over samplers) with random actions, resets included."""
    from envs.tasks import GymTaskFactory
    from envs.vector import Samplers

    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, num_samplers, 2)).astype(np.float32)
    with Samplers(GymTaskFactory(), "train", num_samplers, num_workers, run_seed=0) as s:
        s.reset()
        t0 = time.perf_counter()
        for a in actions:
            s.step(a)
        return steps * num_samplers / (time.perf_counter() - t0)


def train_run(out: Path, overrides: list[str]) -> dict:
    """Run launch.py; wall time and the TensorBoard figures of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), f"run_dir={out}", *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    steps = scalars["train/approx_fps"][-1][0]
    fps = float(np.mean([v for _, v in scalars["train/approx_fps"]]))
    collect_fps = float(np.mean([v for _, v in scalars["train/env_steps_per_s"]]))
    return {
        "wall_s": round(wall, 1),
        "env_steps": steps,
        "train_steps_per_s": round(fps),
        "collect_steps_per_s": round(collect_fps),
        "collect_share": round(fps / collect_fps, 3),
        "valid_curve": [(s, round(v, 1)) for s, v in scalars.get("valid/reward", [])],
    }


def plot_curve(run_dir: Path, png: Path, title: str) -> None:
    """Train reward (per metric window) and validation reward (per checkpoint) against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for tag, style in (("train/reward", "-"), ("valid/reward", "o-")):
        points = acc.Scalars(tag)
        ax.plot([p.step for p in points], [p.value for p in points], style, label=tag)
    ax.axhline(200, color="grey", ls="--", lw=1, label="solved (200)")
    ax.set_xlabel("env steps (summed over samplers)")
    ax.set_ylabel("episode reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="train 160k steps instead of the full 1.2M")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"env_only_steps_per_s": {}}
    for workers in (0, 1):
        rate = env_only(8, workers)
        results["env_only_steps_per_s"][f"8 samplers, {workers} worker(s)"] = round(rate)
        print(f"env only, 8 samplers, {workers} worker process(es) beside the learner: {rate:8.0f} steps/s", flush=True)
    overrides = ["pipeline.stages.0.max_stage_steps=160000"] if args.quick else []
    name = "quick_160k" if args.quick else "default_1.2M"
    run_dir = out / name
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    print(f"training ({name}) ...", flush=True)
    run = train_run(run_dir, overrides)
    results[name] = run
    floor = results["env_only_steps_per_s"]["8 samplers, 0 worker(s)"]
    run["train_vs_env_only"] = round(run["train_steps_per_s"] / floor, 3)
    print(f"training: {run['train_steps_per_s']} steps/s (collection alone {run['collect_steps_per_s']} steps/s; "
          f"collection is {run['collect_share']:.0%} of wall time); {run['train_vs_env_only']:.0%} of env-only")
    print(f"wall time: {run['wall_s']} s for {run['env_steps']} env steps (start-up and validation included)")
    print("valid reward by env steps: " + ", ".join(f"{s}: {v}" for s, v in run["valid_curve"]))
    plot_curve(run_dir, out / f"{name}_curve.png", f"{name}: {run['wall_s']:.0f} s wall on this machine")
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
