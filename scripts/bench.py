"""Throughput, update cost, scaling and time-to-solve figures; `make bench` (ARGS="--only solve" etc.).

Writes ``bench_results/bench.json`` and ``bench_results/bench.md`` (the tables) and prints them:

* ``env``: env-only steps/s (random actions, no policy) for each backend and sampler layout: the floor;
* ``update``: ms per PPO gradient step for the default (16,000-step full batch) and the fast preset (4,096);
* ``default``: the full default run (1.2M steps; 160k with --quick): wall time, training steps/s with the
  collection share, peak RSS, validation curve;
* ``scaling``: training steps/s (fast preset's update schedule) over samplers 1..32 and worker processes;
* ``solve``: time-to-solve: wall seconds and env steps until a deterministic evaluation over 10 fixed-seed
  episodes (run every ~25k steps) first reaches a mean reward >= 200; median over 3 seeds, per config.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTIONS = ("env", "update", "default", "scaling", "solve")
FAST = ["experiment=lunar_lander_fast"]
ENVPOOL = ["env=lunar_lander_continuous_envpool"]
SOLVE_CONFIGS = {"default": [], "fast": FAST, "fast + envpool": FAST + ENVPOOL}
# the time-to-solve protocol: 10 deterministic fixed-seed episodes every ~25k steps, stop at the first >= 200
SOLVE_EVAL = ["pipeline.stop_at_valid_reward=200", "env.valid_episodes_per_sampler=10", "pipeline.save_interval=25000"]


def _has_envpool() -> bool:
    try:
        import envpool  # noqa: F401
    except ImportError:
        return False
    return True


def env_only(backend: str, num_samplers: int, num_workers: int, steps: int = 3000) -> float:
    """Env steps/s (summed over samplers) with random actions, resets included."""
    from envs.tasks import EnvPoolTaskFactory, GymTaskFactory

    factory = EnvPoolTaskFactory() if backend == "envpool" else GymTaskFactory()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, num_samplers, 2)).astype(np.float32)
    with factory.train_samplers(num_samplers, num_workers, 0) as s:
        s.reset()
        t0 = time.perf_counter()
        for a in actions:
            s.step(a)
        return steps * num_samplers / (time.perf_counter() - t0)


def update_ms(batch: int, num_mini_batch: int, repeats: int = 20) -> float:
    """Milliseconds per PPO gradient step on ``batch / num_mini_batch`` samples (the default model)."""
    import torch

    from models.actor_critic import MemorylessActorCritic
    from rl_core.ppo import PPOLoss, ppo_update, prepare_advantages
    from rl_core.storage import RolloutStorage

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    samplers = 8 if batch >= 8000 else 16
    steps = batch // samplers
    model = MemorylessActorCritic(8, 2)
    storage = RolloutStorage(steps, samplers, 8, 2, model.log_prob_dims, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    storage.obs.normal_(generator=gen)
    storage.rewards.normal_(generator=gen)
    with torch.no_grad():
        mean, value = model(storage.obs[:-1])
        storage.actions.copy_(mean + 0.5 * torch.randn(mean.shape, generator=gen))
        storage.log_probs.copy_(model.log_prob(mean, storage.actions))
        storage.values[:-1] = value
    loss = PPOLoss()
    prepare_advantages(storage, loss, 0.99, True, 0.95, False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as conf/pipeline/gym_tutorial.yaml
    ppo_update(model, loss, opt, storage, 1, num_mini_batch, 0.5, gen)  # warm-up
    t0 = time.perf_counter()
    ppo_update(model, loss, opt, storage, repeats, num_mini_batch, 0.5, gen)
    return (time.perf_counter() - t0) * 1000 / (repeats * num_mini_batch)


def launch(run_dir: Path, overrides: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run launch.py; (wall seconds, peak RSS in MB of the largest child so far, the process)."""
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), f"run_dir={run_dir}", *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(overrides)}):\n{proc.stderr[-3000:]}")
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return wall, rss_mb, proc


def tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def rates(run_dir: Path) -> tuple[float, float]:
    """(training steps/s, collection-only steps/s), averaged over the run's metric windows."""
    s = tb_scalars(run_dir)
    return float(np.mean([v for _, v in s["train/approx_fps"]])), float(np.mean([v for _, v in s["train/env_steps_per_s"]]))


def plot_curve(run_dir: Path, png: Path, title: str) -> None:
    """Train reward (per metric window) and validation reward (per checkpoint) against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = tb_scalars(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for tag, style in (("train/reward", "-"), ("valid/reward", "o-")):
        ax.plot([p for p, _ in s.get(tag, [])], [v for _, v in s.get(tag, [])], style, label=tag)
    ax.axhline(200, color="grey", ls="--", lw=1, label="solved (200)")
    ax.set_xlabel("env steps (summed over samplers)")
    ax.set_ylabel("episode reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def plot_solve(curves: dict[str, list[list[tuple[float, float]]]], png: Path) -> None:
    """Evaluation reward against wall seconds, one line per seed, one colour per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for colour, (name, runs) in zip(("C0", "C1", "C2", "C3"), curves.items()):
        for i, run in enumerate(runs):
            ax.plot([w for w, _ in run], [r for _, r in run], "o-", ms=3, color=colour, alpha=0.8,
                    label=name if i == 0 else None)
    ax.axhline(200, color="grey", ls="--", lw=1)
    ax.set_xlabel("wall seconds since training started")
    ax.set_ylabel("eval reward (10 fixed-seed episodes)")
    ax.set_title("time to solve: every seed until its first eval >= 200")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="160k-step default run, 1 seed for time-to-solve")
    parser.add_argument("--seeds", default="1,2,3", help="time-to-solve training seeds")
    parser.add_argument("--configs", default=",".join(SOLVE_CONFIGS), help="time-to-solve configs, comma-separated")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_file = out / "bench.json"
    results: dict = json.loads(json_file.read_text()) if json_file.is_file() else {}  # sections accumulate
    backends = ["gymnasium"] + (["envpool"] if _has_envpool() else [])

    if "env" in only:
        table = {}
        for backend, samplers, workers in [("gymnasium", 8, 0), ("gymnasium", 8, 1), ("gymnasium", 16, 0),
                                           ("envpool", 8, 0), ("envpool", 16, 0)]:
            if backend in backends:
                table[f"{backend}, {samplers} samplers, {workers} worker(s)"] = round(env_only(backend, samplers, workers))
                print(f"env only: {backend}, {samplers} samplers, {workers} workers: "
                      f"{table[f'{backend}, {samplers} samplers, {workers} worker(s)']} steps/s", flush=True)
        results["env_only_steps_per_s"] = table

    if "update" in only:
        results["update_ms"] = {"default: 16,000-sample full batch": round(update_ms(16000, 1), 2),
                                "fast preset: 4,096-sample full batch": round(update_ms(4096, 1), 2)}
        print("ms per PPO gradient step:", results["update_ms"], flush=True)

    if "default" in only:
        name = "default_160k" if args.quick else "default_1.2M"
        print(f"training ({name}) ...", flush=True)
        run_dir = out / name
        wall, rss, _ = launch(run_dir, ["pipeline.stages.0.max_stage_steps=160000"] if args.quick else [])
        fps, collect = rates(run_dir)
        floor = results.get("env_only_steps_per_s", {}).get("gymnasium, 8 samplers, 0 worker(s)")
        results[name] = {
            "wall_s": round(wall, 1), "train_steps_per_s": round(fps), "collect_steps_per_s": round(collect),
            "collection_share_of_wall": round(fps / collect, 3),
            "train_vs_env_only": round(fps / floor, 3) if floor else None, "peak_rss_mb": rss,
            "valid_curve": [(s, round(v, 1)) for s, v in tb_scalars(run_dir).get("valid/reward", [])],
        }
        print(json.dumps(results[name]), flush=True)
        plot_curve(run_dir, out / f"{name}_curve.png", f"{name}: {wall:.0f} s wall on this machine")

    if "scaling" in only:
        table = {}
        for workers in (0, 1, 2):
            for samplers in (1, 2, 4, 8, 16, 32):
                if workers >= samplers:
                    continue
                steps = max(64, 4096 // samplers)
                run_dir = out / "scaling"
                launch(run_dir, FAST + [f"machine.num_samplers={samplers}", f"machine.num_workers={workers}",
                                        f"pipeline.num_steps={steps}", f"pipeline.stages.0.max_stage_steps={8 * steps * samplers}",
                                        f"pipeline.metric_accumulate_interval={2 * steps * samplers}",
                                        "pipeline.save_interval=100000000"])
                fps, _ = rates(run_dir)
                table[f"{samplers} samplers, {workers} workers"] = round(fps)
                print(f"scaling: {samplers} samplers, {workers} worker processes: {fps:.0f} training steps/s", flush=True)
        results["scaling_train_steps_per_s"] = table

    if "solve" in only:
        seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
        names = args.configs.split(",")
        unknown = set(names) - set(SOLVE_CONFIGS)
        if unknown:
            raise SystemExit(f"--configs: unknown {sorted(unknown)}; choose from {list(SOLVE_CONFIGS)}")
        solve = results.get("time_to_solve", {})  # configs not run this time keep their figures
        for name, overrides in SOLVE_CONFIGS.items():
            if name not in names or ("envpool" in name and "envpool" not in backends):
                continue
            runs = []
            for seed in seeds:
                run_dir = out / "solve" / f"{name.replace(' + ', '_')}_{seed}"
                wall, _, proc = launch(run_dir, overrides + SOLVE_EVAL + [f"seed={seed}"])
                valid = [json.loads(line) for line in (run_dir / "valid.json").read_text().splitlines()]
                hit = next((v for v in valid if v["reward"] >= 200), None)
                startup = wall - valid[-1]["wall_s"]  # interpreter, imports, env and model set-up
                runs.append({"seed": seed, "solved": hit is not None,
                             "env_steps": hit["training_steps"] if hit else None,
                             "train_wall_s": round(hit["wall_s"], 1) if hit else None,
                             "process_wall_s": round(hit["wall_s"] + startup, 1) if hit else None,
                             "curve": [(v["wall_s"], round(v["reward"], 1)) for v in valid]})
                print(f"solve {name} seed {seed}: { {k: v for k, v in runs[-1].items() if k != 'curve'} }", flush=True)
            solved = [r for r in runs if r["solved"]]
            med = (lambda key: float(np.median([r[key] if r["solved"] else np.inf for r in runs])))
            solve[name] = {"runs": runs, "solved": f"{len(solved)}/{len(runs)}", "median_env_steps": med("env_steps"),
                           "median_process_wall_s": med("process_wall_s"), "median_train_wall_s": med("train_wall_s")}
        results["time_to_solve"] = solve
        plot_solve({name: [r.get("curve", []) for r in s["runs"]] for name, s in solve.items()}, out / "solve_curves.png")

    json_file.write_text(json.dumps(results, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {json_file}, {out / 'bench.md'}")


def markdown(r: dict) -> str:
    lines = ["| figure | measured |", "|---|---|"]
    for k, v in r.get("env_only_steps_per_s", {}).items():
        lines.append(f"| env-only, {k} | {v:,} steps/s |")
    for k, v in r.get("update_ms", {}).items():
        lines.append(f"| PPO gradient step, {k} | {v} ms |")
    for name in ("default_1.2M", "default_160k"):
        if name in r:
            d = r[name]
            share = f", {d['train_vs_env_only']:.0%} of env-only" if d.get("train_vs_env_only") else ""
            lines.append(f"| training, default config ({name}) | {d['train_steps_per_s']:,} steps/s{share}; collection "
                         f"{d['collect_steps_per_s']:,} steps/s, {d['collection_share_of_wall']:.0%} of wall time |")
            lines.append(f"| {name} run, wall time / peak RSS | {d['wall_s']} s / {d['peak_rss_mb']} MB |")
    out = "\n".join(lines) + "\n"
    if r.get("scaling_train_steps_per_s"):
        table = r["scaling_train_steps_per_s"]
        out += "\nTraining steps/s with the fast preset's update schedule:\n\n| samplers | " + " | ".join(
            f"{w} workers" for w in (0, 1, 2)) + " |\n|---|---|---|---|\n"
        for n in (1, 2, 4, 8, 16, 32):
            out += f"| {n} | " + " | ".join(f"{table.get(f'{n} samplers, {w} workers', '—'):,}"
                                            if f"{n} samplers, {w} workers" in table else "—" for w in (0, 1, 2)) + " |\n"
    if r.get("time_to_solve"):
        out += "\nTime to solve (10 fixed-seed deterministic episodes >= 200, eval every ~25k steps):\n\n"
        out += "| config | solved | median env steps | median wall s (process) | per seed: steps / wall s |\n|---|---|---|---|---|\n"
        for name, s in r["time_to_solve"].items():
            per = ", ".join(f"{x['env_steps']:,} / {x['process_wall_s']}" if x["solved"] else "not solved" for x in s["runs"])
            out += (f"| {name} | {s['solved']} | {s['median_env_steps']:,.0f} | {s['median_process_wall_s']:.0f} | {per} |\n")
    return out


if __name__ == "__main__":
    main()
