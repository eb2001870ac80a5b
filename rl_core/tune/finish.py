"""What a study leaves in its folder once its trials are counted: ``study.md`` (trials, best, the env-step
ledger, the held-out rerun on the test seeds, seeds, space, budget, machine), Optuna's plots and the held-out
scores under ``study/plots/``, and ``experiment/tuned.yaml``,
an experiment preset that trains the best trial's configuration: ``--config-dir <sweep> experiment=tuned``."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from rl_core.run_config import GROUPS
from rl_core.tune import heldout
from rl_core.tune.study import study_dir

log = logging.getLogger("tune")
PLOTS = {"history": "plot_optimization_history", "importances": "plot_param_importances",
         "parallel_coordinates": "plot_parallel_coordinate", "intermediate_values": "plot_intermediate_values"}


def ledger(study: optuna.Study, settings: dict[str, Any]) -> dict[str, int]:
    """Env steps spent by finished and by pruned trials, and what the counted trials would have spent unpruned."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    spent = {state: sum(int(t.user_attrs.get("env_steps", 0)) for t in trials if t.state == state)
             for state in (TrialState.COMPLETE, TrialState.PRUNED)}
    full = max((int(t.user_attrs.get("env_steps", 0)) for t in trials if t.state == TrialState.COMPLETE), default=0)
    return {"finished": spent[TrialState.COMPLETE], "pruned": spent[TrialState.PRUNED],
            "unpruned": full * len(trials), "trials_finished": sum(t.state == TrialState.COMPLETE for t in trials),
            "trials_pruned": sum(t.state == TrialState.PRUNED for t in trials)}


def write_plots(study: optuna.Study, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "set up pruning to plot intermediate values"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in PLOTS.items():
        try:
            ax = getattr(views, fn)(study)
        except Exception as e:  # e.g. importances of a study with one finished trial
            log.info("plot %s skipped: %s", name, str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{name}.png")
    return written


def write_tuned(sweep_dir: Path, best: optuna.trial.FrozenTrial, settings: dict[str, Any]) -> Path:
    """The best trial's run config as an experiment preset: the group options its first seed's run composed,
    then every value of every group as that run had it (so a run of it is that run, for the same seed)."""
    run = Path(sweep_dir) / "trials" / f"{best.number:04d}" / f"seed_{settings['seeds'][0]}"
    saved = OmegaConf.load(run / "config.yaml")
    # the groups as the run composed them (an hparams_search or experiment preset may have chosen some)
    choices = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.choices
    groups = [*GROUPS, "test"]
    body = {"defaults": [*({f"override /{g}": choices[g]} for g in groups if choices.get(g)), "_self_"],
            **{g: OmegaConf.to_container(saved[g], resolve=True) for g in groups if g in saved},
            "solved_reward": saved.get("solved_reward")}
    path = Path(sweep_dir) / "experiment" / "tuned.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# @package _global_\n# Best trial {best.number} of study {settings['study_name']!r}: "
            f"{settings['objective']} {best.value:.2f} over seeds {settings['seeds']}; {best.params}\n"
            f"#   python launch.py --config-dir {Path(sweep_dir).resolve()} experiment=tuned seed=S\n")
    path.write_text(head + OmegaConf.to_yaml(OmegaConf.create(body)))
    return path


def finish(study: optuna.Study, settings: dict[str, Any], sweep_dir: Path) -> dict[str, Any]:
    """Write the study's outputs; returns the summary also written to ``study/summary.json``."""
    sdir = study_dir(sweep_dir)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary: dict[str, Any] = {"study": settings["study_name"], "ledger": ledger(study, settings),
                               "seeds": settings["seeds"], "test_seeds": settings["test_seeds"],
                               "search_space": settings["search_space"], "n_trials": settings["n_trials"],
                               "pruner": settings["pruner"], "objective": settings["objective"],
                               "machine": {"host": platform.node(), "cpus": os.cpu_count(),
                                           "python": platform.python_version(), "optuna": optuna.__version__}}
    if done:
        best = study.best_trial
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params}
        run = Path(sweep_dir) / "trials" / f"{best.number:04d}" / f"seed_{settings['seeds'][0]}"
        if (run / "config.yaml").is_file():  # a training run's (a runner that trains nothing leaves none)
            summary["tuned"] = str(write_tuned(sweep_dir, best, settings))
    summary["plots"] = [str(p) for p in write_plots(study, sdir / "plots")]
    tests = heldout.results(study, settings, sweep_dir)
    if tests:
        summary["heldout"] = tests
        picture = heldout.plot(tests, sdir / "plots" / "heldout.png", settings.get("solved_reward"))
        summary["plots"] += [str(picture)] if picture else []
    (sdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    rows = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    lines = [f"# Study {settings['study_name']}", "",
             f"{summary['ledger']['trials_finished']} finished, {summary['ledger']['trials_pruned']} pruned of "
             f"{settings['n_trials']} trials; tuning seeds {settings['seeds']}; objective {settings['objective']} "
             f"(IQM over seeds); pruner {settings['pruner']}.", "",
             "| trial | state | value | env steps | params |", "|---|---|---|---|---|"]
    lines += [f"| {t.number} | {t.state.name.lower()} | {'' if t.value is None else f'{t.value:.2f}'} | "
              f"{t.user_attrs.get('env_steps', '')} | {t.params} |" for t in rows]
    led = summary["ledger"]
    lines += ["", f"Env steps: {led['finished']:,} by finished trials, {led['pruned']:,} by pruned ones; the counted "
              f"trials unpruned would have spent {led['unpruned']:,}."]
    if "tuned" in summary:
        lines += ["", f"Best: trial {best.number}, {best.value:.2f}, {best.params}. Train it: "
                  f"`python launch.py --config-dir {Path(sweep_dir).resolve()} experiment=tuned seed=S`"]
    lines += heldout.markdown(tests, settings)
    (sdir / "study.md").write_text("\n".join(lines) + "\n")
    return summary
