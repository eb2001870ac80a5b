"""Tuning studies (the rl_tune sweeper): kills and reruns counted exactly, pruning and its env-step ledger,
tuned.yaml reproducing the best trial, and bad input refused in one line with the study left as it was."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
import torch

from tests.conftest import ROOT, launch_env

FAST = ["hydra/sweeper=rl_tune", "hydra.sweeper.runner._target_=tests.tune_objective.FastRuns",
        "pipeline.optimizer.lr=tag(log, interval(1e-4, 1e-2))", "hydra.sweeper.sampler=random",
        "hydra.sweeper.seeds=[1,2]", "experiment=smoke"]


def _study(sweep):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep / "study" / "journal.log")))
    return optuna.load_study(study_name="study", storage=storage)


def _counted(sweep, running=False):
    """Trials counted (complete or pruned); with running=True, 0 unless a trial is also running then."""
    try:
        states = Counter(t.state for t in _study(sweep).trials)
    except Exception:  # the study is not made yet
        return 0
    if running and not states[optuna.trial.TrialState.RUNNING]:
        return 0
    return states[optuna.trial.TrialState.COMPLETE] + states[optuna.trial.TrialState.PRUNED]


def _tune(*args, **popen):
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--multirun", *args], cwd=ROOT, env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.slow
def test_a_study_killed_three_times_ends_with_exactly_its_trials_and_little_work_lost(tmp_path):
    """Two workers on one journal; the whole study (every worker) SIGKILLed at 3 points, the same command run
    again each time: 24 counted trials, each once, each seed's validations once, at most a step of each
    running trial done twice per kill, the lost trials rerun with their parameters."""
    sweep = tmp_path / "sweep"
    args = [*FAST, "hydra/launcher=parallel", "hydra.sweeper.workers=2", "hydra.sweeper.n_trials=24",
            "+hydra.sweeper.runner.delay_s=0.03", f"hydra.sweep.dir={sweep}"]
    for point in (4, 10, 16):
        proc = _tune(*args, start_new_session=True)
        deadline = time.monotonic() + 180
        # the last kill waits for a running trial, so there is one to rerun (between two trials there is none)
        while _counted(sweep, running=point == 16) < point and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert point <= _counted(sweep) < 24
    running = [t.number for t in _study(sweep).trials if t.state == optuna.trial.TrialState.RUNNING]
    params_before = {t.number: t.params for t in _study(sweep).trials}
    proc = _tune(*args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    trials = _study(sweep).trials
    states = Counter(t.state for t in trials)
    assert states[optuna.trial.TrialState.COMPLETE] + states[optuna.trial.TrialState.PRUNED] == 24
    assert states[optuna.trial.TrialState.RUNNING] == 0 and running  # the last kill left trials running: rerun
    assert all(trials[n].params == params_before[n] for n in running)
    for t in trials:
        for seed in (1, 2):
            steps = [json.loads(line)["training_steps"]
                     for line in (sweep / "trials" / f"{t.number:04d}" / f"seed_{seed}" / "valid.json").read_text().splitlines()]
            assert steps == list(range(100, 1001, 100))  # resumed where it stopped, nothing twice
    twice = sum(n - 1 for n in Counter((sweep / "work.log").read_text().splitlines()).values())
    assert twice <= 3 * 2 * 2  # per kill, per worker, per seed: the one step being written
    summary = json.loads((sweep / "study" / "summary.json").read_text())
    assert summary["ledger"]["finished"] == 24 * 2 * 1000 and summary["best"]["trial"] in range(24)


@pytest.mark.slow
def test_the_start_and_the_top_trials_rerun_on_the_test_seeds_scored_by_hand_and_a_kill_loses_one_step(tmp_path):
    """After the trials, the start (trial 0) and the 2 best rerun on 5 test seeds, in units of 2 seeds that two
    workers lease; the study is SIGKILLed in that phase and run again: each test run's validations once, the
    IQM and P(improvement) in summary.json those of the scores reward(params, seed, 1000) computed here."""
    from rl_core.tune.heldout import p_improvement
    from rl_core.tracking.report import iqm
    from tests.tune_objective import STEPS, reward

    sweep, tests = tmp_path / "sweep", [11, 12, 13, 14, 15]
    args = [*FAST, "hydra/launcher=parallel", "hydra.sweeper.workers=2", "hydra.sweeper.n_trials=6",
            f"hydra.sweeper.test_seeds=[{','.join(map(str, tests))}]", "+hydra.sweeper.runner.delay_s=0.03",
            f"hydra.sweep.dir={sweep}"]
    proc = _tune(*args, start_new_session=True)
    results = sweep / "study" / "heldout"
    deadline = time.monotonic() + 180
    while len(list(results.glob("test-*.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert 2 <= len(list(results.glob("test-*.json"))) < 9  # 3 configs x 3 units: killed in the middle
    proc = _tune(*args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    trials = _study(sweep).trials
    best = sorted((t for t in trials), key=lambda t: (-t.value, t.number))
    expected = [0] + [t.number for t in best if t.number != 0][:2 - (0 in [t.number for t in best[:2]])]
    rows = json.loads((sweep / "study" / "summary.json").read_text())["heldout"]
    assert [r["trial"] for r in rows] == expected and rows[0]["label"].startswith("start")
    scores = {}
    for r in rows:
        params = trials[r["trial"]].params
        scores[r["trial"]] = [reward(params, s, STEPS) for s in tests]
        assert [r["runs"][str(s)]["score"] for s in tests] == pytest.approx(scores[r["trial"]])
        assert r["n"] == 5 and r["iqm"] == pytest.approx(iqm(scores[r["trial"]]))
        assert r["iqm_ci"][0] <= r["iqm"] <= r["iqm_ci"][1]
        for s in tests:
            steps = [json.loads(line)["training_steps"] for line in
                     (sweep / "test" / f"{r['trial']:04d}" / f"seed_{s}" / "valid.json").read_text().splitlines()]
            assert steps == list(range(100, STEPS + 1, 100))  # resumed where the kill left it, nothing twice
    for r in rows[1:]:
        assert r["p_improvement"] == pytest.approx(p_improvement(scores[r["trial"]], scores[0]))
    assert p_improvement([1, 2], [0, 2]) == 0.625  # (1 + 0 + 1 + 0.5) / 4 pairs
    tested = [line for line in (sweep / "work.log").read_text().splitlines() if line.split()[0] in
              {f"{n:04d}" for n in expected} and int(line.split()[1]) in tests]
    assert len(tested) - len(set(tested)) <= 2 * 2  # per worker, per seed of its unit: the step being written
    assert "## Held-out rerun on test seeds" in (sweep / "study" / "study.md").read_text()
    assert (sweep / "study" / "plots" / "heldout.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "halving", "wilcoxon"])
def test_each_pruner_stops_poor_trials_at_a_validation_and_the_ledger_counts_their_steps(tmp_path, pruner):
    sweep = tmp_path / "sweep"
    proc = _tune(*FAST, "hydra.sweeper.n_trials=12", f"hydra.sweeper.pruner={pruner}", "hydra.sweeper.pruner_startup_trials=2",
                 f"hydra.sweep.dir={sweep}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    trials = _study(sweep).trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and len(pruned) + sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 12
    for t in pruned:
        run = sweep / "trials" / f"{t.number:04d}" / "seed_1"
        assert json.loads((run / "PRUNED").read_text())["trial"] == t.number
        assert t.user_attrs["env_steps"] < 2 * 1000  # stopped before the end, on both seeds
        # stopped at the validation after the one that pruned it (wilcoxon: a report per seed, step x 2 + seed index)
        pruned_at = max(t.intermediate_values) // (2 if pruner == "wilcoxon" else 1)
        assert pruned_at + 100 >= t.user_attrs["env_steps"] // 2
    ledger = json.loads((sweep / "study" / "summary.json").read_text())["ledger"]
    assert ledger["pruned"] == sum(t.user_attrs["env_steps"] for t in pruned) and ledger["unpruned"] == 12 * 2000
    assert ledger["finished"] + ledger["pruned"] < ledger["unpruned"]
    assert (sweep / "study" / "plots" / "intermediate_values.png").is_file()


@pytest.mark.slow
def test_a_real_study_warm_starts_from_the_config_and_tuned_yaml_trains_the_best_trial_bit_for_bit(tmp_path, launch):
    sweep = tmp_path / "sweep"
    proc = _tune("hparams_search=lr_clip", "experiment=smoke", "hydra.sweeper.n_trials=2", "hydra.sweeper.seeds=[3,4]",
                 "hydra.sweeper.test_seeds=[7]", "hydra.sweeper.test_top=1", f"hydra.sweep.dir={sweep}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name="lr_clip", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "study" / "journal.log"))))
    assert study.trials[0].params == {"pipeline.optimizer.lr": 1e-3, "algo.clip_param": 0.2}  # the smoke config's
    best = study.best_trial
    finals = [json.loads((sweep / "trials" / f"{best.number:04d}" / f"seed_{s}" / "DONE").read_text())["reward"]
              for s in (3, 4)]
    assert best.value == pytest.approx(sum(finals) / 2)  # the IQM of two seeds is their mean
    again = launch("--config-dir", str(sweep), "experiment=tuned", "seed=4", f"run_dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    ckpt = sorted((sweep / "trials" / f"{best.number:04d}" / "seed_4" / "checkpoints").glob("ckpt_*.pt"))[-1]
    a = torch.load(ckpt, weights_only=True)["model"]
    b = torch.load(tmp_path / "again" / "checkpoints" / ckpt.name, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert {p.name for p in (sweep / "study" / "plots").iterdir()} >= {"history.png", "parallel_coordinates.png",
                                                                        "heldout.png"}
    # the held-out rerun: the start and the best on test seed 7, scored on the last checkpoint's held-out episodes
    rows = json.loads((sweep / "study" / "summary.json").read_text())["heldout"]
    assert {r["trial"] for r in rows} == {0, best.number}
    for r in rows:
        last = json.loads((sweep / "test" / f"{r['trial']:04d}" / "seed_7" / "valid.json").read_text().splitlines()[-1])
        assert last["training_steps"] == 1600 and r["runs"]["7"]["score"] == last["heldout"]["reward"]
        assert r["on"] == ["heldout"] and r["iqm"] == last["heldout"]["reward"]


@pytest.mark.parametrize("extra, fragment", [
    (["algo.clip_parm=interval(0.1, 0.3)"], "algo.clip_parm (search space): not a key of the run config (did you mean algo.clip_param?)"),
    (["algo.clip_param=interval(0.3, 0.1)"], "algo.clip_param (search space): interval(0.3, 0.1) is an empty range"),
    (["hydra.sweeper.pruner=median", "pipeline.save_interval=100000"], "hydra.sweeper.pruner: median prunes on the validations before the end"),
    (["hydra.sweeper.test_seeds=[2,9]"], "hydra.sweeper.test_seeds: [2] also tune"),
    (["hydra.sweeper.sampler=cmaes"], "hydra.sweeper.sampler: tpe or random, got 'cmaes'"),
    (["hydra.sweeper.lease_s=3"], "hydra.sweeper.lease_s: above 10"),
    (["pipeline.update_repeats=int(interval(4, 80))"], "pipeline.update_repeats (search space): the command's config sets it to 2, outside int(interval(4, 80))"),
    (["hydra.sweeper.test_top=-1"], "hydra.sweeper.test_top: 0 (no held-out rerun) or more, got -1"),
    (["hydra.sweeper.test_overrides=['pipeline.stop_at_valid_rewrd=200']"], "hydra.sweeper.test_overrides: Could not override 'pipeline.stop_at_valid_rewrd'"),
])
def test_bad_search_input_is_one_line_and_starts_nothing(launch_here, tmp_path, extra, fragment):
    sweep = tmp_path / "sweep"
    proc = launch_here("--multirun", *FAST, *extra, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr[-2000:]
    assert not (sweep / "trials").exists()


def test_a_study_folder_of_another_search_space_is_refused_and_left_as_it_was(launch_here, tmp_path):
    sweep = tmp_path / "sweep"
    first = launch_here("--multirun", *FAST, "hydra.sweeper.n_trials=2", "+hydra.sweeper.runner.delay_s=0", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-2000:]
    journal = (sweep / "study" / "journal.log").read_bytes()
    other = launch_here("--multirun", *FAST, "algo.clip_param=interval(0.1, 0.3)",
                        f"hydra.sweep.dir={sweep}")
    assert other.returncode == 2 and "algo.clip_param (search space): new to this command's search space" in other.stderr
    assert (sweep / "study" / "journal.log").read_bytes() == journal
