"""The bench's ``tune`` section.

* ``journal``: 1,000 trials of a trivial objective from 8 worker processes claiming from one study on one
  journal file through the tuner's own claim and leases (rl_core.tune.study): every trial told once, none lost,
  the journal reloads.
* ``utilisation``: a study of uneven trials (median pruning stops some early) with 2 workers on 2 cores
  (``hydra/launcher=parallel``) and the tests' fast objective sped to real time, against the same trials run by
  one worker: the workers' busy share (time inside trials over workers × the time from the first trial's start
  to the last one's end, from the journal).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _journal_worker(sweep: str, worker: int, n: int) -> None:
    import optuna

    from rl_core.tune.study import Leases, claim, load_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = {"study_name": "bench", "sampler": "random", "sampler_seed": 0, "pruner": "none", "seeds": [1]}
    study = load_study(Path(sweep), settings, worker)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    leases = Leases(Path(sweep), str(worker), 60.0)
    while (picked := claim(study, leases, n, space)) is not None:
        number, params, _ = picked
        study.tell(number, params["x"] ** 2)
        leases.release(number)


def journal(trials: int = 1000, workers: int = 8) -> dict:
    import optuna

    from rl_core.tune.study import storage

    with tempfile.TemporaryDirectory() as d:
        optuna.create_study(study_name="bench", storage=storage(Path(d)))
        t0 = time.perf_counter()
        procs = [mp.get_context("spawn").Process(target=_journal_worker, args=(d, w, trials)) for w in range(workers)]
        [p.start() for p in procs]
        [p.join() for p in procs]
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="bench", storage=storage(Path(d)))
        states = [t.state.name for t in study.trials]
        numbers = [t.number for t in study.trials]
        return {"trials_asked": len(states), "complete": states.count("COMPLETE"), "other_states": len(states) - states.count("COMPLETE"),
                "unique_numbers": len(set(numbers)), "workers": workers, "wall_s": round(wall, 1),
                "journal_mb": round((Path(d) / "study" / "journal.log").stat().st_size / 1e6, 2)}


def _busy(sweep: Path, workers: int) -> tuple[float, float]:
    """(busy share, window s): time inside trials (the journal's start and end of each) over workers × the
    window from the first trial's start to the last one's end (start-up and the study's end left out)."""
    import optuna

    from rl_core.tune.study import storage

    trials = optuna.load_study(study_name="study", storage=storage(sweep)).trials
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    window = (end - start).total_seconds()
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials) / (workers * window), window


def utilisation(trials: int = 16) -> dict:
    out = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            sweep = Path(d) / "sweep"
            args = [sys.executable, str(ROOT / "launch.py"), "--multirun", "hydra/sweeper=rl_tune",
                    "hydra.sweeper.runner._target_=tests.tune_objective.FastRuns", "+hydra.sweeper.runner.delay_s=0.2",
                    "pipeline.optimizer.lr=tag(log, interval(1e-4, 1e-2))", "hydra.sweeper.seeds=[1,2]",
                    "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_startup_trials=2", "experiment=smoke",
                    f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.workers={workers}",
                    "hydra/launcher=parallel", f"hydra.launcher.n_jobs={workers}", f"hydra.sweep.dir={sweep}"]
            t0 = time.perf_counter()
            proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1200)
            wall = time.perf_counter() - t0
            busy, window = _busy(sweep, workers)
            out[f"{workers}_workers"] = {"rc": proc.returncode, "wall_s": round(wall, 1), "window_s": round(window, 1),
                                         "busy_share": round(busy, 3)}
    return out


def measure() -> dict:
    return {"journal": journal(), "utilisation": utilisation()}


def markdown(r: dict) -> str:
    j, u = r["journal"], r["utilisation"]
    rows = "".join(f"| {k.split('_')[0]} | {v['wall_s']} | {v['window_s']} | {v['busy_share']:.0%} |\n" for k, v in u.items())
    return (f"\n1,000 trials from {j['workers']} workers on one journal file: {j['trials_asked']} asked, {j['complete']} "
            f"complete, {j['other_states']} in another state, {j['unique_numbers']} distinct numbers, {j['wall_s']} s, "
            f"journal {j['journal_mb']} MB.\n\nA 16-trial study of uneven trials (median pruning, the fast objective at "
            "0.2 s a validation, 2 seeds):\n\n| workers | command wall s | first trial to last (s) | workers busy |\n|---|---|---|---|\n" + rows)


if __name__ == "__main__":
    import json

    result = measure()
    print(json.dumps(result, indent=1))
    print(markdown(result))
