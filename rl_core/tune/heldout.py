"""The end of a study: the starting configuration and the ``test_top`` best trials rerun on the test seeds
(which no trial trained on), each run scored on its held-out episodes (the episodes no validation plays,
``env.heldout_episodes_per_sampler``), so the study's claim rests on seeds and episodes the tuning never saw.

The workers do it, as they do trials: once every trial is counted, the plan (``study/heldout/plan.json``) names
the configurations, each split into units of as many test seeds as a trial has tuning seeds
(``test/<trial>/seed_<s>``); a worker leases a unit as it leases a trial, and writes its result to
``study/heldout/<unit>.json``. The starting configuration's units need no ranking, so they run while the last
trials end. A killed unit is rerun from its runs' checkpoints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from rl_core.tracking.report import bootstrap_ci, iqm, wilson
from rl_core.tune.runs import RunsFailed
from rl_core.tune.space import overrides_of
from rl_core.tune.study import COUNTED, Leases, study_dir

ON = {"heldout": "the held-out episodes", "valid": "its validation episodes (it played no held-out ones)"}
WAIT = "wait"   # claim_unit: nothing to run yet, but trials are still running (the plan waits on them)


def enabled(settings: dict[str, Any]) -> bool:
    return bool(settings.get("test_seeds")) and int(settings.get("test_top", 0)) > 0


def heldout_dir(sweep_dir: Path) -> Path:
    return study_dir(sweep_dir) / "heldout"


def make_plan(study: optuna.Study, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """[{trial, label, params}]: the starting configuration (trial 0, the command's config), then the
    ``test_top`` best finished trials (ties: the earlier trial), the start not named twice."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return []
    plan = [{"trial": trials[0].number, "label": "start", "params": dict(trials[0].params)}]
    sign = -1.0 if settings["direction"] == "maximize" else 1.0
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (sign * t.value, t.number))
    for rank, t in enumerate(done[:int(settings["test_top"])], 1):
        if t.number == plan[0]["trial"]:
            plan[0]["label"] = f"start = top {rank}"
        else:
            plan.append({"trial": t.number, "label": f"top {rank}", "params": dict(t.params)})
    return plan


def units(plan: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    size = max(1, len(settings["seeds"]))
    tests = list(settings["test_seeds"])
    return [{**entry, "key": f"test-{entry['trial']:04d}-{tests[i]}", "seeds": tests[i:i + size]}
            for entry in plan for i in range(0, len(tests), size)]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, value: Any) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def current_plan(study: optuna.Study, settings: dict[str, Any], sweep_dir: Path) -> tuple[list[dict[str, Any]], bool]:
    """(plan, final). Final once every trial is counted and none runs: then it is written (and remade only if
    the study has since counted more trials, e.g. run again with a larger ``n_trials``). Before that, only the
    starting configuration, which no ranking decides."""
    trials = study.get_trials(deepcopy=False)
    n_counted = sum(t.state in COUNTED for t in trials)
    path = heldout_dir(sweep_dir) / "plan.json"
    saved = _read(path)
    if saved is not None and saved["counted"] == n_counted:
        return saved["plan"], True
    if n_counted >= int(settings["n_trials"]) and not any(t.state == TrialState.RUNNING for t in trials):
        plan = make_plan(study, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, {"counted": n_counted, "plan": plan})
        return plan, True
    return make_plan(study, {**settings, "test_top": 0}), False


def claim_unit(study: optuna.Study, settings: dict[str, Any], leases: Leases, sweep_dir: Path) -> dict[str, Any] | str | None:
    """The next unit to run (its lease written), ``WAIT`` while the plan waits on running trials, or None."""
    if not enabled(settings):
        return None
    with leases.locked():
        plan, final = current_plan(study, settings, sweep_dir)
        for unit in units(plan, settings):
            if _read(heldout_dir(sweep_dir) / f"{unit['key']}.json") is None and not leases.alive(unit["key"]):
                leases.write(unit["key"])
                return unit
        return None if final else WAIT


def pending(study: optuna.Study, settings: dict[str, Any], sweep_dir: Path) -> bool:
    """Whether the held-out rerun has units without a result (or no final plan yet)."""
    if not enabled(settings):
        return False
    plan, final = current_plan(study, settings, sweep_dir)
    return not final or any(_read(heldout_dir(sweep_dir) / f"{u['key']}.json") is None for u in units(plan, settings))


def score(entries: list[dict[str, Any]], solved: float | None) -> dict[str, Any]:
    """A test run from its validations: the held-out reward of its last checkpoint (its validation reward if
    it played none), its env steps, and where a held-out check first reached ``solved`` (robust solve)."""
    last = entries[-1]
    robust = next((e for e in entries if solved is not None and e.get("heldout", {}).get("reward", -np.inf) >= solved), None)
    return {"score": float(last["heldout"]["reward"] if "heldout" in last else last["reward"]),
            "on": "heldout" if "heldout" in last else "valid", "env_steps": int(last["training_steps"]),
            "robust_env_steps": int(robust["training_steps"]) if robust else None,
            "robust_wall_s": float(robust["heldout"].get("wall_s", np.nan)) if robust else None}


def run_unit(runner: Any, unit: dict[str, Any], settings: dict[str, Any], sweep_dir: Path) -> None:
    """Train the unit's test seeds (resuming runs a kill left) and write its result; a failed run is recorded."""
    overrides = overrides_of(unit["params"]) + list(settings.get("test_overrides", []))
    out = Path(sweep_dir) / "test" / f"{unit['trial']:04d}"
    try:
        curves = runner.run(out, overrides, unit["seeds"], lambda curves: False)
        result = {str(s): score(c, settings.get("solved_reward")) if c else {"failed": "no validation"}
                  for s, c in curves.items()}
    except RunsFailed as e:
        result = {str(s): {"failed": str(e)} for s in unit["seeds"]}
    heldout_dir(sweep_dir).mkdir(parents=True, exist_ok=True)
    _write(heldout_dir(sweep_dir) / f"{unit['key']}.json", result)


def p_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for a run of X against a run of Y (rliable's probability of improvement)."""
    diff = np.asarray(x, float)[:, None] - np.asarray(y, float)[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def p_improvement_ci(x: np.ndarray, y: np.ndarray, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``p_improvement``, each side's runs resampled."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    draws = [p_improvement(x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))])
             for _ in range(samples)]
    return float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


def results(study: optuna.Study, settings: dict[str, Any], sweep_dir: Path) -> list[dict[str, Any]]:
    """Per configuration of the plan: its test runs, the IQM of their scores with a 95% bootstrap interval,
    the rate of runs reaching ``solved_reward`` (Wilson interval), the median robust-solve steps and seconds
    (a run that never solved counts as infinite), and the probability of improvement over the start."""
    if not enabled(settings):
        return []
    plan, final = current_plan(study, settings, sweep_dir)
    by_trial: dict[int, dict[str, Any]] = {}
    for unit in units(plan, settings):
        got = _read(heldout_dir(sweep_dir) / f"{unit['key']}.json") or {}
        by_trial.setdefault(unit["trial"], {}).update(got)
    solved, rows = settings.get("solved_reward"), []
    for entry in plan:
        runs = by_trial.get(entry["trial"], {})
        ok = {int(s): r for s, r in runs.items() if "score" in r}
        scores = np.array([r["score"] for r in ok.values()])
        row = {**entry, "final": final, "runs": runs, "n": len(ok), "of": len(settings["test_seeds"]),
               "failed": sorted(int(s) for s, r in runs.items() if "failed" in r)}
        if len(scores):
            row.update(iqm=iqm(scores), iqm_ci=bootstrap_ci(scores, stat=iqm), mean=float(scores.mean()),
                       on=sorted({r["on"] for r in ok.values()}))
            if solved is not None:
                k = int((scores >= solved).sum())
                row.update(solved=k, solved_ci=wilson(k, len(scores)))
                for key in ("robust_env_steps", "robust_wall_s"):
                    row[f"median_{key}"] = float(np.median([r[key] if r[key] is not None else np.inf for r in ok.values()]))
        rows.append(row)
    start = np.array([r["score"] for r in rows[0]["runs"].values() if "score" in r]) if rows else np.array([])
    for row in rows[1:]:
        mine = np.array([r["score"] for r in row["runs"].values() if "score" in r])
        if len(mine) and len(start):
            row.update(p_improvement=p_improvement(mine, start), p_improvement_ci=p_improvement_ci(mine, start))
    return rows


def markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """The held-out rerun's table for study.md."""
    if not rows:
        return []
    solved = settings.get("solved_reward")
    lines = ["", f"## Held-out rerun on test seeds {settings['test_seeds']}", "",
             "Each configuration trained again on every test seed (none of them tuned); a run's score is its last "
             "checkpoint's mean reward on " + " or ".join(sorted({ON[o] for r in rows for o in r.get("on", [])}))
             + f". IQM over test seeds with a 95% bootstrap interval; P(improvement) = P(a run of it beats a run of "
             f"the start), with its 95% bootstrap interval." + ("" if rows[0]["final"] else
                                                               " **The plan is not final: trials are still running.**"),
             "", "| config | trial | runs | IQM [95% CI] | mean |"
             + (f" ≥ {solved:g} [95% CI] | median robust solve, env steps / train s |" if solved is not None else "")
             + " P(improvement) | params |",
             "|---|---|---|---|---|" + ("---|---|" if solved is not None else "") + "---|---|"]
    for r in rows:
        cells = [r["label"], str(r["trial"]), f"{r['n']}/{r['of']}" + (f" ({len(r['failed'])} failed)" if r["failed"] else "")]
        if r["n"]:
            cells += [f"{r['iqm']:.1f} [{r['iqm_ci'][0]:.1f}, {r['iqm_ci'][1]:.1f}]", f"{r['mean']:.1f}"]
            if solved is not None:
                steps, wall = r["median_robust_env_steps"], r["median_robust_wall_s"]
                cells += [f"{r['solved']}/{r['n']} [{r['solved_ci'][0]:.2f}, {r['solved_ci'][1]:.2f}]",
                          f"{steps:,.0f} / {wall:.0f}" if np.isfinite(steps) else "never (median)"]
        else:
            cells += ["", ""] + (["", ""] if solved is not None else [])
        pi = r.get("p_improvement")
        cells += [f"{pi:.2f} [{r['p_improvement_ci'][0]:.2f}, {r['p_improvement_ci'][1]:.2f}]" if pi is not None else "",
                  str(r["params"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict[str, Any]], path: Path, solved: float | None) -> Path | None:
    """Each configuration's test-seed scores (a dot a seed) with its IQM and interval."""
    rows = [r for r in rows if r["n"]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) + 2), 4.5))
    for i, r in enumerate(rows):
        scores = [x["score"] for x in r["runs"].values() if "score" in x]
        jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(scores))
        ax.scatter(i + jitter, scores, s=18, alpha=0.7)
        ax.errorbar(i + 0.3, r["iqm"], yerr=[[r["iqm"] - r["iqm_ci"][0]], [r["iqm_ci"][1] - r["iqm"]]], fmt="s",
                    color="black", capsize=4)
    if solved is not None:
        ax.axhline(solved, color="grey", ls="--", lw=1)
    ax.set_xticks(range(len(rows)), [f"{r['label']}\n(trial {r['trial']})" for r in rows])
    ax.set_ylabel("held-out score (a dot a test seed; IQM, 95% CI)")
    ax.set_title("the held-out rerun")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
