"""Throughput, update cost, scaling and time-to-solve figures; `make bench` (ARGS="--only solve" etc.).

Writes ``bench_results/bench.json`` and ``bench_results/bench.md`` (the tables) and prints them:

* ``env``: env-only steps/s (random actions, no policy) for each backend and sampler layout: the floor;
* ``update``: ms per PPO gradient step for the default (16,000-step full batch) and the fast preset (4,096),
  eager and with ``machine.compile=true``; the floor: the matmuls of a default step at this machine's
  measured matmul rate, and the best share of env-only throughput the default could reach with it;
* ``default``: the full default run (1.2M steps; 160k with --quick): wall time, training steps/s with the
  collection share, peak RSS, validation curve;
* ``scaling``: training steps/s (fast preset's update schedule) over samplers 1..32 and worker processes;
* ``solve``: time-to-solve: wall seconds and env steps until a deterministic evaluation over 10 fixed-seed
  episodes (run every ~25k steps) first reaches a mean reward >= 200, the held-out score (100 episodes no
  evaluation plays) of that checkpoint, and the "robust" time: until a checkpoint also holds >= 200 over the
  held-out episodes (the run stops there, or at its budget). Per config, over ``--seeds``: the seeds that
  solved and robustly solved as rates with a 95% Wilson interval, and medians;
* ``load``: training steps/s alone and beside two busy processes (a shared machine), for the default and the
  fast preset's schedules, with libgomp's own spin-wait, with the launcher's shorter one (``GOMP_SPINCOUNT``
  set by ``launch.py``) and with ``machine.torch_threads=1``;
* ``sb3``: the same for Stable-Baselines3 PPO with RL Zoo's hyperparameters (``scripts/sb3_solve.py``), side
  by side, when stable-baselines3 is installed (``pip install -e '.[sb3]'``);
* ``suite``: continuous-control presets (``--suite-envs``) × ``--suite-seeds``, each with its recipe to its
  budget, trained as the README's commands do (gymnasium samplers; ``--suite-envpool``: the envpool twins),
  ``--suite-jobs`` runs at a time: final held-out score as IQM with a 95% bootstrap CI beside the published PPO figures, wall seconds
  per 1M env steps, curves; and training throughput against SB3 with the same hyperparameters on HalfCheetah
  (``scripts/suite.py``, ``scripts/sb3_suite.py``);
* ``distributed``: training steps/s of the fast preset's schedule (16 samplers in all) in one process with 2
  torch threads against 2 torchrun ranks × 8 samplers with 1 thread each (gloo), and ms per ``all_reduce``
  of the model's gradients over loopback (``scripts/allreduce_time.py``); the spread of rollout times; and
  the straggler cut-off with rank 1 slowed on purpose (``tests/slow_env.py``), without and with
  ``machine.sync_frac=0.5``, and its cost with no straggler. ``scripts/scaling_model.py`` turns these
  figures into a model of 1–64 ranks (docs/performance.md);
* ``offpolicy``: SAC's training env steps/s beside SB3's on HalfCheetah, ms per gradient step and where it
  goes, the replay buffer's checkpoint cost at 100k and 1M transitions, and the SAC/TD3 presets' held-out
  scores over ``--offpolicy-seeds`` (``scripts/offpolicy.py``, ``scripts/sb3_sac_speed.py``).
* ``packing``: a 16-seed smoke sweep on the local two-node SLURM cluster as 16 SLURM jobs and packed 8 to a
  job: queue-to-report wall time and core utilisation (``scripts/packing.py``; needs root, as the cluster does).
* ``tune``: 1,000 trials from 8 workers on one journal file (none lost or told twice), and 2 tuning workers'
  busy share on a study of uneven (pruned) trials (``scripts/tune_bench.py``).
* ``tune_study`` (only when named: hours): the ``ppo_lunar`` study from the reference config, its held-out
  rerun on 16 test seeds and the env-step ledger against its targets (``--tune-trials``, ``--tune-overrides``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import scaling_model  # noqa: E402 - scripts/scaling_model.py: the distributed section's model
import offpolicy  # noqa: E402 - scripts/offpolicy.py: the offpolicy section
import packing  # noqa: E402 - scripts/packing.py: the packing section
import tune_bench  # noqa: E402 - scripts/tune_bench.py: the tune section
import suite  # noqa: E402 - scripts/suite.py: the suite section
from rl_core.tracking.report import wilson  # noqa: E402,F401 - rates with their interval (tests call bench.wilson)

SECTIONS = ("env", "update", "default", "scaling", "load", "solve", "sb3", "suite", "distributed", "offpolicy",
            "packing", "tune")
FAST = ["experiment=lunar_lander_fast"]
STRAGGLER_DELAY_S = 0.0002  # the distributed section's slowed rank: this much more per env step (tests/slow_env.py)
ENVPOOL = ["env=lunar_lander_continuous_envpool"]
SOLVE_CONFIGS = {"default": [], "fast": FAST, "fast + envpool": FAST + ENVPOOL,
                 "fast + envpool + compile": FAST + ENVPOOL + ["machine.compile=true"]}
SB3 = "SB3 PPO, RL Zoo hyperparameters"  # scripts/sb3_solve.py, same protocol; only when stable-baselines3 is installed
# the time-to-solve protocol: 10 deterministic fixed-seed episodes every ~25k steps, stop at the first >= 200
# the default's schedule (conf/pipeline/gym_tutorial.yaml): 1.2M env steps in rollouts of 8 samplers x 2,000 steps,
# 80 full-batch gradient steps each
DEFAULT_ENV_STEPS = 1_200_000
DEFAULT_GRADIENT_STEPS = DEFAULT_ENV_STEPS // (8 * 2000) * 80
SOLVE_EVAL = ["pipeline.stop_at_valid_reward=200", "pipeline.confirm_on_heldout=true", "env.valid_episodes_per_sampler=10",
              "pipeline.save_interval=25000"]


def _has(module: str) -> bool:
    """Whether an optional package (envpool, stable_baselines3) is installed."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def env_only(backend: str, num_samplers: int, num_workers: int, steps: int = 3000) -> float:
    """Env steps/s (summed over samplers) with random actions, resets included."""
    from envs.envpool_backend import EnvPoolTaskFactory
    from envs.factory import GymTaskFactory

    factory = EnvPoolTaskFactory() if backend == "envpool" else GymTaskFactory()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, num_samplers, 2)).astype(np.float32)
    with factory.train_samplers(num_samplers, num_workers, 0) as s:
        s.reset()
        t0 = time.perf_counter()
        for a in actions:
            s.step(a)
        return steps * num_samplers / (time.perf_counter() - t0)


def update_ms(batch: int, num_mini_batch: int, repeats: int = 20, compile: bool = False,
              device: str = "cpu") -> tuple[float, float]:
    """(ms per PPO gradient step on ``batch / num_mini_batch`` samples of the default model, seconds of the
    first step: with ``compile``, that is the ``torch.compile`` time), on ``device``."""
    import torch

    from models.actor_critic import MemorylessActorCritic
    from rl_core.algo.compiled import CompiledLoss
    from rl_core.algo.ppo import PPOLoss, ppo_update, prepare_advantages
    from rl_core.algo.storage import RolloutStorage

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    dev = torch.device(device)
    samplers = 8 if batch >= 8000 else 16
    steps = batch // samplers
    model = MemorylessActorCritic(8, 2).to(dev)
    storage = RolloutStorage(steps, samplers, 8, 2, model.log_prob_dims, dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    storage.obs.normal_(generator=gen)
    storage.rewards.normal_(generator=gen)
    with torch.no_grad():
        mean, value = model(storage.obs[:-1])
        storage.actions.copy_(mean + 0.5 * torch.randn(mean.shape, generator=gen, device=dev))
        storage.log_probs.copy_(model.log_prob(mean, storage.actions))
        storage.values[:-1] = value
    loss = PPOLoss()
    prepare_advantages(storage, loss, 0.99, True, 0.95, False)
    update_loss = CompiledLoss(loss) if compile else loss
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as conf/pipeline/gym_tutorial.yaml
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    ppo_update(model, update_loss, opt, storage, 1, num_mini_batch, 0.5, gen)  # warm-up (and compile)
    sync()
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ppo_update(model, update_loss, opt, storage, repeats, num_mini_batch, 0.5, gen)
    sync()
    return (time.perf_counter() - t0) * 1000 / (repeats * num_mini_batch), first_s


def mujoco_step_ms(threads: int, fused: bool, repeats: int = 5) -> float:
    """ms per gradient step of the MuJoCo recipe (HalfCheetah's shapes: 17 observations, 6 actions, 64x64 tanh,
    64-transition minibatches of a 2,048-step rollout) with ``threads`` torch threads, by autograd or with
    ``machine.fused_update``'s gradients by hand."""
    import torch

    from models.actor_critic import MemorylessActorCritic
    from rl_core.algo.fused_ppo import FusedPPOGradients
    from rl_core.algo.ppo import PPOLoss, ppo_update, prepare_advantages
    from rl_core.algo.storage import RolloutStorage

    torch.set_num_threads(threads)
    model = MemorylessActorCritic(17, 6, hidden_sizes=[64, 64], action_std=1.0, learn_std=True, log_prob="joint",
                                  init="orthogonal", squash_mean=False, normalize_obs=True)
    storage = RolloutStorage(512, 4, 17, 6, model.log_prob_dims, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    storage.obs.normal_(generator=gen)
    storage.rewards.normal_(generator=gen)
    with torch.no_grad():
        mean, value = model(storage.obs[:-1])
        storage.actions.copy_(mean + torch.randn(mean.shape, generator=gen))
        storage.log_probs.copy_(model.log_prob(mean, storage.actions))
        storage.values[:-1] = value
    loss = PPOLoss()
    prepare_advantages(storage, loss, 0.99, True, 0.95, False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, eps=1e-5, fused=True)
    update_loss = FusedPPOGradients(loss) if fused else loss
    ppo_update(model, update_loss, opt, storage, 1, None, 0.5, gen, 64)  # warm-up
    t0 = time.perf_counter()
    ppo_update(model, update_loss, opt, storage, repeats, None, 0.5, gen, 64)
    return (time.perf_counter() - t0) * 1000 / (repeats * 32)


def gemm_gflops(n: int = 1024, repeats: int = 30) -> float:
    """This machine's float32 matmul rate on all cores (n x n times n x n), GFLOP/s: the update's ceiling."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def step_matmuls(batch: int) -> list[tuple[int, Callable[[], object]]]:
    """The matmuls of one gradient step of the default model on ``batch`` samples, as (FLOP, a call that runs
    it on random tensors of its shape): per Linear layer its forward, its weight gradient and its input
    gradient, the last none for the first layers, whose input is the observation. The first layers' weight
    gradient is computed as the model does it, (x^T g)^T."""
    import torch

    from models.actor_critic import MemorylessActorCritic

    model = MemorylessActorCritic(8, 2)
    products = []
    for linears in (model._actor_linears, model._critic_linears):
        for i, layer in enumerate(linears):
            x, w = torch.randn(batch, layer.in_features), torch.randn(layer.out_features, layer.in_features)
            g = torch.randn(batch, layer.out_features)
            flop = 2 * batch * layer.in_features * layer.out_features
            products.append((flop, lambda x=x, w=w: x @ w.T))
            products.append((flop, (lambda x=x, g=g: (x.T @ g).T) if i == 0 else (lambda x=x, g=g: g.T @ x)))
            if i > 0:
                products.append((flop, lambda g=g, w=w: g @ w))
    return products


def step_gflop(batch: int) -> float:
    """GFLOP of the matmuls alone in one gradient step of the default model on ``batch`` samples."""
    return sum(flop for flop, _ in step_matmuls(batch)) / 1e9


def step_matmul_ms(batch: int, repeats: int = 500) -> float:
    """Milliseconds of the matmuls alone in one gradient step on ``batch`` samples, each timed at its own
    shape on all cores: what no rewrite of the rest of the step can go below."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    total = 0.0
    for _, product in step_matmuls(batch):
        for _ in range(20):
            product()
        t0 = time.perf_counter()
        for _ in range(repeats):
            product()
        total += (time.perf_counter() - t0) / repeats
    return total * 1000


def run_process(cmd: list[str], env: dict | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run ``cmd`` in the repo (``env`` added to the environment, a None value removing that variable); (wall
    seconds, peak RSS in MB of that process, the process). Fails loudly."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=out_f, stderr=err_f, text=True, env=full_env)
        _, status, usage = os.wait4(child.pid, 0)  # this run's own rusage, not the max over earlier runs
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        proc = subprocess.CompletedProcess(child.args, child.returncode, out_f.read(), err_f.read())
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, usage.ru_maxrss // 1024, proc


def launch(run_dir: Path, overrides: list[str], env: dict | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run launch.py into a fresh ``run_dir``; as :func:`run_process`."""
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    return run_process([sys.executable, str(ROOT / "launch.py"), f"run_dir={run_dir}", *overrides], env)


# the load section: (name, overrides) of the schedules, and (name, environment, overrides) of the thread settings
LOAD_SCHEDULES = (("default", ["pipeline.stages.0.max_stage_steps=96000", "pipeline.metric_accumulate_interval=16000"]),
                  ("fast preset", FAST + ["pipeline.stages.0.max_stage_steps=65536", "pipeline.save_interval=1000000"]))
LOAD_SETTINGS = (("libgomp's spin-wait", {"GOMP_SPINCOUNT": "300000"}, []),
                 ("launcher default", {"GOMP_SPINCOUNT": None}, []),
                 ("machine.torch_threads=1", {"GOMP_SPINCOUNT": None}, ["machine.torch_threads=1"]))


def busy_processes(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep a core busy (a shared machine's other work), until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def solve_record(seed: int, wall: float, evals: list[dict]) -> dict:
    """One time-to-solve run from its evaluations (``training_steps``, ``wall_s`` since training started,
    ``reward``, and ``heldout`` where the held-out episodes were played) and the process wall time; the
    start-up (imports, set-up) counts in the ``process_wall_s`` figures."""
    hit = next((v for v in evals if v["reward"] >= 200), None)
    robust = next((v for v in evals if v.get("heldout", {}).get("reward", -np.inf) >= 200), None)
    last = evals[-1].get("heldout", evals[-1])["wall_s"]
    startup = wall - last
    return {"seed": seed, "solved": hit is not None, "env_steps": hit["training_steps"] if hit else None,
            "train_wall_s": round(hit["wall_s"], 1) if hit else None,
            "process_wall_s": round(hit["wall_s"] + startup, 1) if hit else None,
            "heldout_at_solve": round(hit["heldout"]["reward"], 1) if hit and "heldout" in hit else None,
            "robust": robust is not None, "robust_env_steps": robust["training_steps"] if robust else None,
            "robust_process_wall_s": round(robust["heldout"]["wall_s"] + startup, 1) if robust else None,
            "curve": [(v["wall_s"], round(v["reward"], 1)) for v in evals]}


def solve_summary(runs: list[dict]) -> dict:
    """Rates of seeds that solved (10 episodes) and robustly solved (held-out), with Wilson intervals, and
    medians over seeds; a seed that never solved counts as infinite."""
    def med(key: str, ok: str) -> float:
        return float(np.median([r[key] if r.get(ok) else np.inf for r in runs]))

    n, solved, robust = len(runs), sum(r["solved"] for r in runs), sum(r.get("robust", False) for r in runs)
    heldout = [r["heldout_at_solve"] for r in runs if r.get("heldout_at_solve") is not None]
    return {"runs": runs, "solved": f"{solved}/{n}", "solved_ci": wilson(solved, n),
            "median_env_steps": med("env_steps", "solved"), "median_process_wall_s": med("process_wall_s", "solved"),
            "median_train_wall_s": med("train_wall_s", "solved"),
            "median_heldout_at_solve": float(np.median(heldout)) if heldout else None,
            "robust": f"{robust}/{n}", "robust_ci": wilson(robust, n),
            "median_robust_env_steps": med("robust_env_steps", "robust"),
            "median_robust_process_wall_s": med("robust_process_wall_s", "robust")}


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
    for colour, (name, runs) in zip(("C0", "C1", "C2", "C3", "C4", "C5"), curves.items()):
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
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {SECTIONS}, or tune_study (hours: only when named)")
    parser.add_argument("--quick", action="store_true", help="160k-step default run, 1 seed for time-to-solve")
    parser.add_argument("--seeds", default="1,2,3", help="time-to-solve training seeds")
    parser.add_argument("--configs", default=",".join(SOLVE_CONFIGS), help="time-to-solve configs, comma-separated")
    parser.add_argument("--suite-envs", default=",".join(suite.DEFAULT_ENVS),
                        help=f"suite section: env presets, comma-separated, of {list(suite.SUITE)}")
    parser.add_argument("--suite-seeds", default="1,2,3", help="suite section: training seeds")
    parser.add_argument("--suite-envpool", action="store_true",
                        help="suite section: train on the envs' envpool twins (the README's commands use gymnasium's)")
    parser.add_argument("--suite-jobs", type=int, default=1,
                        help="suite section: runs at a time (the scores do not change; wall times are then shared)")
    parser.add_argument("--offpolicy-presets", default=",".join(offpolicy.DEFAULT_SCORES),
                        help=f"offpolicy section: presets to score, of {list(offpolicy.SCORES)} ('' for none)")
    parser.add_argument("--offpolicy-seeds", default="1,2,3,4,5", help="offpolicy section: training seeds")
    parser.add_argument("--offpolicy-parts", default=",".join(offpolicy.PARTS),
                        help="offpolicy section: which of speed, profile, checkpoint, scores to run")
    parser.add_argument("--offpolicy-overrides", default="",
                        help="offpolicy scores: overrides added to every run, space-separated (e.g. machine.torch_threads=1 "
                             "to score two lanes side by side; the speed part always runs the preset as it is)")
    parser.add_argument("--tune-trials", type=int, default=None,
                        help="tune_study section: trials (default: the ppo_lunar preset's 48)")
    parser.add_argument("--tune-overrides", default="", help="tune_study section: overrides added to the study command")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_file = out / "bench.json"
    results: dict = json.loads(json_file.read_text()) if json_file.is_file() else {}  # sections accumulate
    backends = ["gymnasium"] + (["envpool"] if _has("envpool") else [])

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
        table, compile_s = {}, {}
        for name, batch in (("default: 16,000-sample full batch", 16000), ("fast preset: 4,096-sample full batch", 4096)):
            table[name] = round(update_ms(batch, 1)[0], 2)
            ms, compile_s[name] = update_ms(batch, 1, compile=True)
            table[f"{name}, machine.compile=true"] = round(ms, 2)
        for name, threads, fused in (("MuJoCo recipe: 64-transition minibatch, 2 threads", 2, False),
                                     ("MuJoCo recipe, 1 thread", 1, False),
                                     ("MuJoCo recipe, 1 thread, machine.fused_update=true (the recipe's)", 1, True)):
            table[name] = round(mujoco_step_ms(threads, fused), 3)
        results["update_ms"] = table
        results["compile_s"] = {k: round(v, 1) for k, v in compile_s.items()}
        print("ms per PPO gradient step:", table, "compile s:", results["compile_s"], flush=True)
        # The default's floor: its 6,000 gradient steps at this machine's best matmul rate, beside the env-only
        # time of its 1.2M steps; collection and update cannot overlap (the next rollout needs the new weights).
        gflops, gflop = gemm_gflops(), step_gflop(16000)
        floor = results.get("env_only_steps_per_s", {}).get("gymnasium, 8 samplers, 0 worker(s)")
        bound = {"matmul_gflops": round(gflops, 1), "gflop_per_16k_step": round(gflop, 3),
                 "floor_ms_per_16k_step": round(gflop / gflops * 1000, 2),
                 "default_update_floor_s": round(DEFAULT_GRADIENT_STEPS * gflop / gflops, 1)}
        if floor:
            env_s = DEFAULT_ENV_STEPS / floor
            bound["default_env_only_s"] = round(env_s, 1)
            bound["default_best_share_of_env_only"] = round(env_s / (env_s + bound["default_update_floor_s"]), 3)
        # The same bound for the fast preset's step, from its matmuls timed at their own (skinny) shapes:
        # what envpool's 2x over gymnasium would need the whole step to fit in (docs/performance.md).
        bound["matmul_ms_per_4096_step"] = round(step_matmul_ms(4096), 2)
        results["update_floor"] = bound
        print("update floor:", bound, flush=True)

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

    if "load" in only:
        table = {}
        for busy in (0, 2):
            for schedule, overrides in LOAD_SCHEDULES:
                for setting, env, extra in LOAD_SETTINGS:
                    others = busy_processes(busy)
                    try:
                        launch(out / "load", overrides + extra, env)
                    finally:
                        for proc in others:
                            proc.kill()
                            proc.wait()
                    key = f"{schedule}, {setting}, {'alone' if not busy else f'beside {busy} busy processes'}"
                    table[key] = round(rates(out / "load")[0])
                    print(f"load: {key}: {table[key]} training steps/s", flush=True)
        results["load_train_steps_per_s"] = table

    if "solve" in only or "sb3" in only:
        seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
        names = args.configs.split(",")
        unknown = set(names) - set(SOLVE_CONFIGS)
        if unknown:
            raise SystemExit(f"--configs: unknown {sorted(unknown)}; choose from {list(SOLVE_CONFIGS)}")
        solve = results.get("time_to_solve", {})  # configs not run this time keep their figures
        for name, overrides in SOLVE_CONFIGS.items():
            if "solve" not in only or name not in names or ("envpool" in name and "envpool" not in backends):
                continue
            runs = []
            for seed in seeds:
                run_dir = out / "solve" / f"{name.replace(' + ', '_')}_{seed}"
                wall, _, _ = launch(run_dir, overrides + SOLVE_EVAL + [f"seed={seed}"])
                valid = [json.loads(line) for line in (run_dir / "valid.json").read_text().splitlines()]
                runs.append(solve_record(seed, wall, valid))
                print(f"solve {name} seed {seed}: { {k: v for k, v in runs[-1].items() if k != 'curve'} }", flush=True)
            solve[name] = solve_summary(runs)
        if "sb3" in only and not _has("stable_baselines3"):
            print("sb3: stable-baselines3 is not installed (pip install -e '.[sb3]'); no side-by-side run", flush=True)
        elif "sb3" in only:
            runs = []
            for seed in seeds:
                wall, _, proc = run_process([sys.executable, str(ROOT / "scripts" / "sb3_solve.py"), f"--seed={seed}"])
                runs.append(solve_record(seed, wall, [json.loads(line) for line in proc.stdout.splitlines()]))
                print(f"solve {SB3} seed {seed}: { {k: v for k, v in runs[-1].items() if k != 'curve'} }", flush=True)
            solve[SB3] = solve_summary(runs)
        results["time_to_solve"] = solve
        plot_solve({name: [r.get("curve", []) for r in s["runs"]] for name, s in solve.items()}, out / "solve_curves.png")

    if "suite" in only:
        envs = args.suite_envs.split(",")
        unknown = set(envs) - set(suite.SUITE)
        if unknown:
            raise SystemExit(f"--suite-envs: unknown {sorted(unknown)}; choose from {list(suite.SUITE)}")
        seeds = [int(s) for s in args.suite_seeds.split(",")][: 1 if args.quick else None]
        table = results.get("suite", {})  # envs not run this time keep their figures
        table.update(suite.run_suite(out, envs, seeds, launch, args.suite_envpool, args.suite_jobs))
        results["suite"] = table
        suite.plot(table, out / "suite_curves.png")
        if _has("stable_baselines3") and "half_cheetah" in envs:
            results["suite_throughput"] = suite.sb3_side_by_side(out, launch, run_process)

    if "distributed" in only:
        schedule = FAST + ["pipeline.stages.0.max_stage_steps=98304", "pipeline.save_interval=1000000",
                           "pipeline.metric_accumulate_interval=4096"]
        launch(out / "distributed_1", schedule + ["machine.torch_threads=2"])
        table = {"1 process x 16 samplers, 2 threads": round(rates(out / "distributed_1")[0])}
        run_dir = out / "distributed_2"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        run_process(torchrun + [str(ROOT / "launch.py"), f"run_dir={run_dir}", *schedule, "machine.num_samplers=8",
                                "machine.torch_threads=1"])
        table["2 ranks x 8 samplers, 1 thread each"] = round(rates(run_dir)[0])  # rank 0 logs global steps
        # one rollout per metric window: the spread of rank 0's collection time from rollout to rollout
        collect = [4096 / v for _, v in tb_scalars(run_dir)["train/env_steps_per_s"]][1:]  # the first warms up
        # a straggler: rank 1's env steps sleep DELAY more (tests/slow_env.py), without and with the cut-off
        slow = ["env.env_id=tests.slow_env:SlowLunarLander-v0", f"+env.env_kwargs.delay_s={STRAGGLER_DELAY_S}"]
        cutoffs = {}
        for name, extra in (("rank 1 slowed", slow), ("rank 1 slowed, sync_frac=0.5", slow + ["machine.sync_frac=0.5"]),
                            ("no straggler, sync_frac=0.5", ["machine.sync_frac=0.5"])):
            d = out / f"distributed_{len(cutoffs) + 3}"
            subprocess.run(["rm", "-rf", str(d)], check=True)
            run_process(torchrun + [str(ROOT / "launch.py"), f"run_dir={d}", *schedule, "machine.num_samplers=8",
                                    "machine.torch_threads=1", *extra])
            fills = [v for _, v in tb_scalars(d).get("train/rollout_fill", [])]
            cutoffs[name] = {"train_steps_per_s": round(rates(d)[0]),
                             "rollout_fill": round(float(np.mean(fills)), 3) if fills else 1.0}
        _, _, proc = run_process(torchrun + [str(ROOT / "scripts" / "allreduce_time.py")])
        results["distributed"] = {"train_steps_per_s": table,
                                  "all_reduce": json.loads(proc.stdout.strip().splitlines()[-1]),
                                  "rollout_collect_s": {"mean": round(float(np.mean(collect)), 4),
                                                        "cv": round(float(np.std(collect) / np.mean(collect)), 4),
                                                        "rollouts": len(collect)},
                                  "straggler": cutoffs, "straggler_delay_s": STRAGGLER_DELAY_S}
        inputs = scaling_model.from_bench(results)
        results["distributed"]["model"] = {"inputs": inputs, "table": scaling_model.table(**inputs)}
        print("distributed:", results["distributed"], flush=True)

    if "packing" in only:
        results["packing"] = packing.measure(out)
        print("packing:", results["packing"], flush=True)
    if "tune" in only:
        results["tune"] = tune_bench.measure()
        print("tune:", results["tune"], flush=True)
    if "tune_study" in only:
        fast = results.get("time_to_solve", {}).get("fast + envpool")
        results["tune_study"] = tune_bench.study(out, args.tune_trials, args.tune_overrides.split(), fast)
        print("tune_study:", results["tune_study"], flush=True)

    if "offpolicy" in only:
        names = [n for n in args.offpolicy_presets.split(",") if n]
        unknown = set(names) - set(offpolicy.SCORES)
        if unknown:
            raise SystemExit(f"--offpolicy-presets: unknown {sorted(unknown)}; choose from {list(offpolicy.SCORES)}")
        parts, section = set(args.offpolicy_parts.split(",")), results.setdefault("offpolicy", {})
        if parts - set(offpolicy.PARTS):
            raise SystemExit(f"--offpolicy-parts: unknown {sorted(parts - set(offpolicy.PARTS))}; choose from {list(offpolicy.PARTS)}")
        if "speed" in parts:
            section["speed"] = offpolicy.speed(out, launch, run_process, tb_scalars, _has("stable_baselines3"))
        if "profile" in parts:
            section["profile"] = offpolicy.profile()
        if "checkpoint" in parts:
            section["checkpoint"] = offpolicy.checkpoint_cost()
        if "scores" in parts:
            seeds = [int(s) for s in args.offpolicy_seeds.split(",")][: 1 if args.quick else None]
            extra = args.offpolicy_overrides.split()
            section.setdefault("scores", {}).update(offpolicy.scores(out, names, seeds, launch, extra))  # others keep theirs

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
    for k, v in r.get("compile_s", {}).items():
        lines.append(f"| torch.compile time (first step), {k} | {v} s |")
    if r.get("update_floor"):
        b = r["update_floor"]
        best = (f"; with the env-only time of 1.2M steps ({b['default_env_only_s']} s), the default can reach at most "
                f"{b['default_best_share_of_env_only']:.0%} of env-only") if "default_env_only_s" in b else ""
        lines.append(f"| update floor: matmuls of a 16,000-sample step ({b['gflop_per_16k_step']} GFLOP) at this machine's "
                     f"{b['matmul_gflops']} GFLOP/s | {b['floor_ms_per_16k_step']} ms/step, {b['default_update_floor_s']} s "
                     f"for the default's 6,000 steps{best} |")
        if "matmul_ms_per_4096_step" in b:
            lines.append(f"| matmuls alone of a 4,096-sample step (fast preset), each timed at its shape | "
                         f"{b['matmul_ms_per_4096_step']} ms/step |")
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
    if r.get("load_train_steps_per_s"):
        out += "\nTraining steps/s alone and beside busy processes:\n\n| schedule, threads | alone | beside 2 busy |\n|---|---|---|\n"
        table = r["load_train_steps_per_s"]
        for key in [k.rsplit(", ", 1)[0] for k in table if k.endswith(", alone")]:
            out += f"| {key} | {table.get(key + ', alone', '—'):,} | {table.get(key + ', beside 2 busy processes', '—'):,} |\n"
    if r.get("time_to_solve"):
        out += ("\nTime to solve (10 fixed-seed deterministic episodes >= 200, eval every ~25k steps) and robust solve "
                "(the checkpoint also >= 200 over 100 held-out episodes); rates with 95% Wilson intervals:\n\n")
        out += ("| config | solved | median env steps | median wall s (process) | held-out score at solve (median) "
                "| robust | median robust env steps | median robust wall s |\n|---|---|---|---|---|---|---|---|\n")
        for name, s in r["time_to_solve"].items():
            ci = s.get("solved_ci") or wilson(*map(int, s["solved"].split("/")))
            rci = s.get("robust_ci")
            heldout = s.get("median_heldout_at_solve")
            out += (f"| {name} | {s['solved']} [{ci[0]:.2f}, {ci[1]:.2f}] | {s['median_env_steps']:,.0f} | "
                    f"{s['median_process_wall_s']:.0f} | {'—' if heldout is None else f'{heldout:.1f}'} | "
                    f"{s.get('robust', '—')}{f' [{rci[0]:.2f}, {rci[1]:.2f}]' if rci else ''} | "
                    f"{s.get('median_robust_env_steps', float('nan')):,.0f} | "
                    f"{s.get('median_robust_process_wall_s', float('nan')):.0f} |\n")
        out += "\nPer seed (env steps / process s to solve; held-out score there; robust steps / s):\n\n"
        for name, s in r["time_to_solve"].items():
            per = "; ".join(
                f"{x['seed']}: " + (f"{x['env_steps']:,} / {x['process_wall_s']}" if x["solved"] else "not solved")
                + (f", held-out {x['heldout_at_solve']}" if x.get("heldout_at_solve") is not None else "")
                + (f", robust {x['robust_env_steps']:,} / {x['robust_process_wall_s']}" if x.get("robust") else "")
                for x in s["runs"])
            out += f"- {name}: {per}\n"
    if r.get("suite"):
        out += suite.markdown(r["suite"], r.get("suite_throughput"))
    if r.get("offpolicy"):
        out += offpolicy.markdown(r["offpolicy"])
    if r.get("packing"):
        out += packing.markdown(r["packing"])
    if r.get("tune"):
        out += tune_bench.markdown(r["tune"])
    if r.get("tune_study"):
        out += tune_bench.study_markdown(r["tune_study"])
    if r.get("distributed"):
        d = r["distributed"]
        out += ("\nOne experiment on ranks (fast preset schedule, 16 samplers in all):\n\n| layout | training steps/s |"
                "\n|---|---|\n" + "".join(f"| {k} | {v:,} |\n" for k, v in d["train_steps_per_s"].items()))
        a = d["all_reduce"]
        out += f"\nall_reduce of the model's {a['parameters']:,} gradients, gloo, loopback: {a['ms_per_all_reduce']} ms\n"
        c = d.get("rollout_collect_s")
        if c:
            out += (f"\nRank 0's rollout collection: {c['mean']} s on average, coefficient of variation {c['cv']} "
                    f"over {c['rollouts']} rollouts\n")
        if d.get("straggler"):
            delay_ms = d["straggler_delay_s"] * 1e3
            out += (f"\nStraggler cut-off, 2 ranks x 8 samplers (rank 1's env steps {delay_ms:g} ms "
                    "slower where slowed):\n\n| run | training steps/s | mean rollout fill |\n|---|---|---|\n"
                    + "".join(f"| {k} | {v['train_steps_per_s']:,} | {v['rollout_fill']} |\n"
                              for k, v in d["straggler"].items()))
        if d.get("model"):
            out += ("\nModel of 1–64 ranks fed with these figures (scripts/scaling_model.py; inputs "
                    f"{ {k: round(v, 4) for k, v in d['model']['inputs'].items()} }):\n\n" + d["model"]["table"])
    return out


if __name__ == "__main__":
    main()
