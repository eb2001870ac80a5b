"""Sweep report: group a multirun's jobs by their overrides except the seed, and compare the groups.

Writes into the sweep dir ``report.md`` (table + failed/unfinished jobs), ``report.csv`` (one row per
group) and ``report_curves.png`` (validation reward against env steps: mean over seeds with a 95%
bootstrap band). Runs at the end of every multirun (``SweepReport``, a Hydra callback) and on demand:
``python launch.py mode=report sweep_dir=multirun/2026-11-23/10-00-00``.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rl_core.markers import DONE, FAILED, read_marker

log = logging.getLogger(__name__)

# Overrides that do not change the experiment: jobs differing only in these are one group.
NOT_A_SETTING = ("seed", "resume")
BOOTSTRAP_SAMPLES = 10_000


@dataclass
class JobRecord:
    """One job of a sweep, read back from its dir."""

    num: str
    path: Path
    overrides: list[str]
    seed: int | str | None  # a str only for a job whose seed was not an integer (it failed)
    status: str                          # finished | failed | unfinished
    error: str | None = None
    final_reward: float | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (env steps, valid reward, wall s)
    heldout: dict[int, float] = field(default_factory=dict)  # env steps -> mean reward on the held-out episodes

    def settings(self) -> list[str]:
        """The overrides that make this job's experiment: all but the seed (and resume)."""
        return sorted(o for o in self.overrides if o.lstrip("+~").split("=", 1)[0] not in NOT_A_SETTING)

    def group(self, common: frozenset[str] = frozenset()) -> str:
        """The group's label: its settings less those every job of the sweep shares."""
        return " ".join(o for o in self.settings() if o not in common) or "(all jobs)"

    def first_reaching(self, threshold: float) -> tuple[int, float] | None:
        """(env steps, wall seconds) of the first validation with mean reward >= threshold."""
        for steps, reward, wall_s in self.curve:
            if reward >= threshold:
                return steps, wall_s
        return None

    def heldout_at_first_solve(self, threshold: float) -> float | None:
        """Held-out reward of the checkpoint that first reached ``threshold`` on validation (if it was played)."""
        reached = self.first_reaching(threshold)
        return self.heldout.get(reached[0]) if reached else None

    def heldout_final(self) -> float | None:
        """Held-out reward of a finished job's final checkpoint."""
        return self.heldout.get(self.curve[-1][0]) if self.status == "finished" and self.curve else None


def read_valid(path: Path) -> list[dict[str, Any]]:
    """The entries of a run's ``valid.json`` in step order, one per step, skipping a line cut short by a kill."""
    entries = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    by_step = {e["training_steps"]: e for e in entries}  # a resumed run may repeat a step: keep the last
    return [by_step[s] for s in sorted(by_step)]


class SweepJobsFailed(RuntimeError):
    """The report was written, but jobs of the sweep failed: ``mode=report`` exits non-zero."""


def read_job(path: Path) -> JobRecord:
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    seed = None
    for o in overrides:
        if o.split("=", 1)[0] == "seed":
            value = o.split("=", 1)[1]
            seed = int(value) if value.lstrip("-").isdigit() else value  # a job with a bad seed failed: listed as is
    if seed is None and (path / "config.yaml").is_file():
        seed = OmegaConf.load(path / "config.yaml").get("seed")
    entries = read_valid(path / "valid.json")
    curve = [(int(e["training_steps"]), float(e["reward"]), float(e.get("wall_s", math.nan))) for e in entries]
    heldout = {int(e["training_steps"]): float(e["heldout"]["reward"]) for e in entries if "heldout" in e}
    done, failed = read_marker(path, DONE), read_marker(path, FAILED)
    if done is not None:
        return JobRecord(path.name, path, overrides, seed, "finished", final_reward=done.get("reward"), curve=curve,
                         heldout=heldout)
    if failed is not None:
        return JobRecord(path.name, path, overrides, seed, "failed", error=failed.get("error"), curve=curve,
                         heldout=heldout)
    return JobRecord(path.name, path, overrides, seed, "unfinished", curve=curve, heldout=heldout)


def read_sweep(sweep_dir: Path) -> list[JobRecord]:
    """The jobs of a sweep: its sub-folders that Hydra started a job in, in job-number order."""
    dirs = [p for p in Path(sweep_dir).iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    return [read_job(p) for p in sorted(dirs, key=lambda p: (len(p.name), p.name))]


# -- statistics ------------------------------------------------------------------------------------

def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of what is left after cutting floor(n/4) values from each end
    (``scipy.stats.trim_mean(x, 0.25)``, as rliable reports it)."""
    x = np.sort(np.asarray(values, dtype=float))
    k = int(0.25 * len(x))
    return float(x[k:len(x) - k].mean())


def bootstrap_ci(values: np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0, stat: Any = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds (or of ``stat``, e.g. ``iqm``): resample the values with
    replacement ``samples`` times and take the (1-level)/2 and (1+level)/2 quantiles of the resampled statistic."""
    x = np.asarray(values, dtype=float)
    draws = x[np.random.default_rng(seed).integers(0, len(x), size=(samples, len(x)))]
    stats = draws.mean(axis=1) if stat is None else np.array([stat(d) for d in draws])
    return float(np.quantile(stats, (1 - level) / 2)), float(np.quantile(stats, (1 + level) / 2))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate of ``k`` successes in ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    p, z2 = k / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (round(float(max(0.0, center - half)), 3), round(float(min(1.0, center + half)), 3))


def group_stats(name: str, jobs: list[JobRecord], threshold: float) -> dict[str, Any]:
    """One table row: final valid reward over the group's finished seeds and time to ``threshold``.

    Steps and wall time to threshold are medians over all the group's seeds, counting a seed that never
    reached it as infinite, so the median is "not reached" when fewer than half got there.
    """
    finals = np.array([j.final_reward for j in jobs if j.status == "finished"], dtype=float)
    reached = [j.first_reaching(threshold) for j in jobs]
    steps = np.array([r[0] if r else np.inf for r in reached], dtype=float)
    walls = np.array([r[1] if r else np.inf for r in reached], dtype=float)
    row: dict[str, Any] = {"group": name, "seeds": len(finals), "jobs": len(jobs),
                           "seed_values": " ".join(str(j.seed) for j in jobs if j.status == "finished")}
    if len(finals):
        lo, hi = bootstrap_ci(finals)
        row.update(mean=float(finals.mean()), std=float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                   iqm=iqm(finals), ci_low=lo, ci_high=hi)
    else:
        row.update(mean=math.nan, std=math.nan, iqm=math.nan, ci_low=math.nan, ci_high=math.nan)
    row.update(reached=int(np.isfinite(steps).sum()), steps_to_threshold=float(np.median(steps)),
               wall_s_to_threshold=float(np.median(walls)))
    # held-out episodes (seeds no validation plays): what claims are made on
    at_solve = np.array([h for j in jobs if (h := j.heldout_at_first_solve(threshold)) is not None], dtype=float)
    final = np.array([h for j in jobs if (h := j.heldout_final()) is not None], dtype=float)
    row.update(heldout_at_solve_iqm=iqm(at_solve) if len(at_solve) else math.nan, heldout_at_solve_n=len(at_solve),
               heldout_final_iqm=iqm(final) if len(final) else math.nan, heldout_final_n=len(final),
               heldout_final_holding=int((final >= threshold).sum()))
    lo, hi = bootstrap_ci(final) if len(final) else (math.nan, math.nan)
    row.update(heldout_final_ci_low=lo, heldout_final_ci_high=hi)
    return row


def common_settings(jobs: list[JobRecord]) -> frozenset[str]:
    return frozenset.intersection(*(frozenset(j.settings()) for j in jobs)) if jobs else frozenset()


def group_jobs(jobs: list[JobRecord]) -> dict[str, list[JobRecord]]:
    """Jobs by group label, in the order of their first job."""
    common = common_settings(jobs)
    groups: dict[str, list[JobRecord]] = {}
    for j in jobs:
        groups.setdefault(j.group(common), []).append(j)
    return groups


# -- outputs -----------------------------------------------------------------------------------------

def _fmt(x: float, spec: str = ".1f") -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, spec)


def _label(threshold: float) -> str:
    return f"{threshold:g}" if math.isfinite(threshold) else "solved_reward (none set)"


def markdown_table(rows: list[dict[str, Any]], threshold: float) -> str:
    threshold = _label(threshold)
    head = (f"| group | seeds | final valid reward (mean ± std) | IQM | 95% CI | env steps to {threshold} "
            f"| wall s to {threshold} | reached | held-out at first {threshold} (IQM) "
            f"| held-out final (IQM) | 95% CI | final held-out ≥ {threshold} |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| `{r['group']}` | {r['seeds']}/{r['jobs']} | {_fmt(r['mean'])} ± {_fmt(r['std'])} | {_fmt(r['iqm'])} "
             f"| [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {_fmt(r['steps_to_threshold'], ',.0f')} "
             f"| {_fmt(r['wall_s_to_threshold'], '.0f')} | {r['reached']}/{r['jobs']} "
             f"| {_fmt(r['heldout_at_solve_iqm'])} (n={r['heldout_at_solve_n']}) | {_fmt(r['heldout_final_iqm'])} "
             f"| [{_fmt(r['heldout_final_ci_low'])}, {_fmt(r['heldout_final_ci_high'])}] "
             f"| {r['heldout_final_holding']}/{r['heldout_final_n']} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def plot_curves(groups: dict[str, list[JobRecord]], path: Path, threshold: float) -> Path | None:
    """Validation reward vs env steps per group: mean over seeds, 95% bootstrap band where ≥ 2 seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    drawn = False
    for name, jobs in groups.items():
        curves = [dict((s, r) for s, r, _ in j.curve) for j in jobs if j.curve]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in curves])  # (seeds, points)
        mean = values.mean(axis=0)
        (line,) = ax.plot(steps, mean, marker="o", ms=3, label=f"{name} (n={len(curves)})")
        for c in curves:  # each seed, thin
            ax.plot(sorted(c), [c[s] for s in sorted(c)], color=line.get_color(), lw=0.7, alpha=0.35)
        if len(curves) > 1:
            band = np.array([bootstrap_ci(values[:, i], samples=2000) for i in range(len(steps))])
            ax.fill_between(steps, band[:, 0], band[:, 1], color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if math.isfinite(threshold):
        ax.axhline(threshold, color="grey", ls="--", lw=1)
    ax.set_xlabel("env steps (summed over samplers)")
    ax.set_ylabel("valid reward (mean over seeds)")
    ax.set_title("validation reward: mean over seeds, 95% bootstrap CI, each seed thin")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(sweep_dir: Path, threshold: float | None = 200.0, logger: Any = None,
                 group_name: str | None = None) -> dict[str, Any]:
    """Read every job of ``sweep_dir``, write report.md / report.csv / report_curves.png into it.

    ``threshold``: the solved score for time-to-threshold and the held-out columns (None: those stay empty).

    Returns {"rows": [...], "problems": [JobRecord, ...], "markdown": str}. ``logger`` (optional) gets
    the table and the figure as a ``report`` run of the sweep's group.
    """
    sweep_dir = Path(sweep_dir)
    threshold = math.nan if threshold is None else float(threshold)  # nothing reaches NaN
    jobs = read_sweep(sweep_dir)
    groups = group_jobs(jobs)
    rows = [group_stats(name, g, threshold) for name, g in groups.items()]
    common = sorted(common_settings(jobs))
    problems = [j for j in jobs if j.status != "finished"]
    image = plot_curves(groups, sweep_dir / "report_curves.png", threshold)
    label = _label(threshold)
    md = [f"# Sweep report: {sweep_dir}\n\n",
          f"{len(jobs)} jobs in {len(groups)} groups; {len(jobs) - len(problems)} finished. Final valid reward = "
          f"the last validation of each finished job; IQM = interquartile mean; CI = 95% percentile bootstrap of "
          f"the mean over seeds. Time to {label}: the first validation with mean reward ≥ {label}, "
          "median over the group's seeds (a seed that never reached it counts as never). Held-out: the mean "
          "reward over episodes on env seeds that validation never plays (`env.heldout_episodes_per_sampler`), of "
          f"the checkpoint that first validated ≥ {label} and of the final one; claims rest on these.\n\n",
          f"Settings shared by all jobs: `{' '.join(common) or '(none)'}`.\n\n" if jobs else "",
          markdown_table(rows, threshold)]
    if problems:
        md.append("\n## Failed or unfinished jobs\n\n| job | status | overrides | last valid step | error |\n"
                  "|---|---|---|---|---|\n")
        md += [f"| {j.num} | {j.status} | `{' '.join(j.overrides)}` | {j.curve[-1][0] if j.curve else '—'} "
               f"| {(j.error or '').replace('|', '/')} |\n" for j in problems]
    if image is not None:
        md.append(f"\n![learning curves]({image.name})\n")
    markdown = "".join(md)
    (sweep_dir / "report.md").write_text(markdown)
    with open(sweep_dir / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["group"])
        writer.writeheader()
        writer.writerows(rows)
    if logger is not None:
        from rl_core.tracking.loggers import RunInfo

        logger.open(RunInfo(sweep_dir, "report", group_name or str(sweep_dir), "report"))
        try:
            logger.log_report(markdown, rows, image)
        finally:
            logger.close()
    return {"rows": rows, "problems": problems, "markdown": markdown}


def print_report(result: dict[str, Any], sweep_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep report: {sweep_dir}")
    for col in ("group", "seeds", "final reward", "IQM", "95% CI", "steps to thr.", "wall s", "reached",
                "held-out@solve", "held-out final", "held"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for r in result["rows"]:
        table.add_row(r["group"], f"{r['seeds']}/{r['jobs']}", f"{_fmt(r['mean'])} ± {_fmt(r['std'])}",
                      _fmt(r["iqm"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                      _fmt(r["steps_to_threshold"], ",.0f"), _fmt(r["wall_s_to_threshold"], ".0f"),
                      f"{r['reached']}/{r['jobs']}", _fmt(r["heldout_at_solve_iqm"]), _fmt(r["heldout_final_iqm"]),
                      f"{r['heldout_final_holding']}/{r['heldout_final_n']}")
    console = Console(stderr=True, width=160)
    console.print(table)
    for j in result["problems"]:
        console.print(f"job {j.num} {j.status}: {' '.join(j.overrides)}" + (f": {j.error}" if j.error else ""))
    log.info("report: %s", Path(sweep_dir) / "report.md")


def report_logger(cfg: DictConfig) -> Any:
    """The sweep's W&B logger when the sweep logged to W&B (the report joins its group), else None."""
    node = cfg.get("logger")
    if node is None:
        return None
    wandb_node = node if str(node.get("_target_", "")).endswith("WandbLogger") else node.get("wandb")
    if wandb_node is None or wandb_node.get("mode") == "disabled":
        return None
    import hydra

    return hydra.utils.instantiate(wandb_node)


class SweepReport(Callback):
    """Hydra callback: writes the sweep report when a multirun ends, also when a job failed (the sweep
    then raises before ``on_multirun_end``, so the report is written at exit instead)."""

    def __init__(self, threshold: float | None = 200.0, enabled: bool = True) -> None:
        self.threshold, self.enabled = threshold, enabled
        self.pending: tuple[Path, DictConfig] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled:
            self.pending = (Path(config.hydra.sweep.dir), config)
            atexit.register(self._write, at_exit=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write()

    def _write(self, at_exit: bool = False) -> None:
        if self.pending is None:
            return
        sweep_dir, config = self.pending
        self.pending = None
        if not sweep_dir.is_dir() or not read_sweep(sweep_dir):  # no job started: nothing to report
            return
        # W&B cannot start its service while the interpreter shuts down: after a failed sweep the report
        # goes to files only, and `mode=report` logs it
        logger = None if at_exit else report_logger(config)
        try:
            with _plain_logging():
                result = write_report(sweep_dir, self.threshold, logger, str(config.hydra.sweep.dir))
                print_report(result, sweep_dir)
                if at_exit and report_logger(config) is not None:
                    log.info("to log this report to W&B: python launch.py mode=report sweep_dir=%s logger=%s",
                             sweep_dir, config.hydra.runtime.choices.get("logger", "wandb"))
        except Exception as e:  # noqa: BLE001 - a report problem must not hide the sweep's own outcome
            log.warning("sweep report failed: %s: %s", type(e).__name__, e)


class _plain_logging:
    """At exit Hydra's logging may be torn down; make sure report lines still reach the console."""

    def __enter__(self) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    def __exit__(self, *exc: Any) -> None:
        pass
