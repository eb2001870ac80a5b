"""A tuning worker (``mode=tune_worker``, started by the rl_tune sweeper): takes the study's next trial as soon
as its last one ends, runs it on the tuning seeds, reports the validations for pruning and tells the result;
once no trial is left, it takes units of the held-out rerun on the test seeds (rl_core.tune.heldout).

Settings come from ``<sweep dir>/study/settings.json`` (written by the sweeper), so every worker, local or on
SLURM, requeued or started again, tunes the same study.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from rl_core.markers import PRUNED, write_marker
from rl_core.signals import TrainingInterrupted
from rl_core.tracking.report import iqm
from rl_core.tune import heldout
from rl_core.tune.runs import RunsFailed, RunsStopped
from rl_core.tune.space import overrides_of
from rl_core.tune.study import BEAT_S, Leases, claim, counted, load_study, study_dir

log = logging.getLogger("tune")


def read_settings(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((study_dir(sweep_dir) / "settings.json").read_text())


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return Path(sweep_dir) / "trials" / f"{number:04d}"


def common_curve(curves: dict[int, list[dict[str, Any]]]) -> list[tuple[int, list[float]]]:
    """[(env steps, [reward of each seed])] at the validations every seed has reached, in step order."""
    by_seed = [{e["training_steps"]: e["reward"] for e in entries} for entries in curves.values()]
    steps = sorted(set.intersection(*(set(b) for b in by_seed))) if by_seed else []
    return [(s, [b[s] for b in by_seed]) for s in steps]


def objective(curves: dict[int, list[dict[str, Any]]], kind: str) -> float:
    """IQM over seeds of the final validation reward ("final"), or the mean over the validations of the
    IQM over seeds ("auc": the area under the validation curve, per validation)."""
    if kind == "auc":
        points = common_curve(curves)
        return float(np.mean([iqm(np.array(r)) for _, r in points]))
    return iqm(np.array([entries[-1]["reward"] for entries in curves.values()]))


class Reporter:
    """The intermediate values a pruner reads: the IQM over seeds at each env step (median, halving), or each
    seed's reward as its own paired instance (wilcoxon: step = validation's env steps × seeds + seed index)."""

    def __init__(self, trial: optuna.Trial, pruner: str, seeds: list[int]) -> None:
        self.trial, self.pruner, self.seeds, self.done, self.pruned = trial, pruner, seeds, set(), False

    def __call__(self, curves: dict[int, list[dict[str, Any]]]) -> bool:
        if self.pruner == "none":
            return False
        fresh = [(s, r) for s, r in common_curve(curves) if s not in self.done and s > 0]
        for steps, rewards in fresh:
            self.done.add(steps)
            if self.pruner == "wilcoxon":
                for i, r in enumerate(rewards):
                    self.trial.report(float(r), steps * len(self.seeds) + i)
            else:
                self.trial.report(iqm(np.array(rewards)), steps)
        self.pruned = bool(fresh) and self.trial.should_prune()
        return self.pruned


def run_trial(study: optuna.Study, settings: dict[str, Any], runner: Any, sweep_dir: Path, number: int,
              params: dict[str, Any]) -> None:
    seeds = list(settings["seeds"])
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    reporter = Reporter(optuna.Trial(study, trial_id), settings["pruner"], seeds)
    out = trial_dir(sweep_dir, number)
    overrides = overrides_of(params)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.json").write_text(json.dumps(params) + "\n")
    try:
        curves = runner.run(out, overrides, seeds, reporter)
    except RunsFailed as e:
        log.error("trial %d failed: %s", number, e)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        return
    steps = int(sum(max((e["training_steps"] for e in c), default=0) for c in curves.values()))
    storage, attrs = study._storage, {"env_steps": steps, "finals": {str(s): c[-1]["reward"] for s, c in curves.items() if c}}
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    if reporter.pruned or not all(curves.values()):
        for s in seeds:
            write_marker(out / f"seed_{s}", PRUNED, trial=number, steps=steps)
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
        log.info("trial %d pruned after %d env steps (all seeds)", number, steps)
        return
    value = objective(curves, settings["objective"])
    study.tell(number, value)
    log.info("trial %d: %s %.2f over seeds %s (%s); %d env steps", number, settings["objective"], value, seeds,
             " ".join(overrides), steps)


def run_worker(cfg: DictConfig) -> int:
    """The worker loop; returns the study's counted trials when it leaves."""
    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir)
    settings = read_settings(sweep_dir)
    worker = str(hc.job.num)
    study = load_study(sweep_dir, settings, int(worker))
    space = {k: optuna.distributions.json_to_distribution(v) for k, v in settings["search_space"].items()}
    runner = instantiate(settings["runner"], base=settings["base"])
    leases = Leases(sweep_dir, worker, float(settings["lease_s"]))
    stopped: dict[str, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:  # preemption: the runs save; the trial is rerun later
        stopped.setdefault("signum", signum)
        runner.signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        while not stopped:
            failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
            if failed >= max(3, int(settings["n_trials"]) // 2):
                raise RunsFailed(f"{failed} trials of the study failed; stopping (their runs' logs are in "
                                 f"{sweep_dir / 'trials'})")
            picked = claim(study, leases, int(settings["n_trials"]), space)
            if picked is None:  # no trial left to start: the held-out rerun's units, once the plan allows
                unit = heldout.claim_unit(study, settings, leases, sweep_dir)
                if unit is None:
                    break
                if unit == heldout.WAIT:  # trials still running elsewhere: one may be lost and need a rerun
                    time.sleep(BEAT_S)
                    continue
                log.info("worker %s: held-out rerun of trial %d (%s) on test seeds %s", worker, unit["trial"],
                         unit["label"], unit["seeds"])
                try:
                    with leases.held(unit["key"]):
                        heldout.run_unit(runner, unit, settings, sweep_dir)
                except RunsStopped:
                    break
                continue
            number, params, rerun = picked
            log.info("worker %s: trial %d%s %s", worker, number, " (rerun, resuming its runs)" if rerun else "", params)
            try:
                with leases.held(number):
                    run_trial(study, settings, runner, sweep_dir, number, params)
            except RunsStopped:
                break
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if stopped:
        raise TrainingInterrupted(f"tuning worker {worker} stopped by {signal.Signals(stopped['signum']).name}; "
                                  "its trial is rerun from its runs' checkpoints by the next worker that looks (requeued, or the "
                                  "sweep run again)",
                                  stopped["signum"], 0, previous.get(stopped["signum"]))
    return counted(study)
