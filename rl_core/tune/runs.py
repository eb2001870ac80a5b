"""A trial's runs: one training run per tuning seed, each ``launch.py`` in its own process and folder
(``<trial dir>/seed_<s>``, its output in ``seed_<s>.log``), the seeds side by side so their validations line up for pruning."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rl_core.checkpoint import list_checkpoints
from rl_core.markers import DONE, PRUNE, read_marker, write_marker
from rl_core.tracking.report import read_valid

log = logging.getLogger(__name__)
LAUNCH = Path(__file__).resolve().parents[2] / "launch.py"
# Watch is called with {seed: valid.json entries so far} and answers True to prune the trial.
Watch = Callable[[dict[int, list[dict[str, Any]]]], bool]


class RunsFailed(RuntimeError):
    """A run of the trial exited with an error (its ``seed_<s>.log`` has it)."""


class RunsStopped(RuntimeError):
    """The runs saved and stopped on a signal (preemption): the trial is left RUNNING, to be rerun."""


def _die_with_parent() -> None:
    """In the child: SIGKILLed worker, killed runs (Linux), so no orphan keeps training a lost trial."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TrainRuns:
    """Runs ``launch.py <base overrides> <trial overrides> seed=S run_dir=...`` for each seed, ``at_once`` at a time.

    Args:
        base: the sweep command's overrides (what the user typed, the search space aside).
        at_once: runs side by side (0: all the trial's seeds).
        poll_s: how often the runs' ``valid.json`` are read.
    """

    def __init__(self, base: list[str], at_once: int = 0, poll_s: float = 1.0) -> None:
        self.base, self.at_once, self.poll_s = list(base), int(at_once), float(poll_s)
        self._procs: list[subprocess.Popen] = []

    def run(self, trial_dir: Path, overrides: list[str], seeds: list[int], watch: Watch) -> dict[int, list[dict[str, Any]]]:
        """{seed: its valid.json entries} once every run ended (finished, or stopped at the checkpoint after
        ``watch`` asked to prune); a run that has a checkpoint resumes from it, one that is DONE is not rerun."""
        trial_dir.mkdir(parents=True, exist_ok=True)
        dirs = {s: trial_dir / f"seed_{s}" for s in seeds}
        waiting, running, prune = list(seeds), {}, False
        try:
            while waiting or running:
                while waiting and (self.at_once <= 0 or len(running) < self.at_once) and not prune:
                    s = waiting.pop(0)
                    if read_marker(dirs[s], DONE) is None:
                        running[s] = self._start(dirs[s], overrides, s)
                for s, proc in list(running.items()):
                    if proc.poll() is not None:
                        del running[s]
                        if proc.returncode == 3:
                            raise RunsStopped(f"{dirs[s]} stopped on a signal")
                        if proc.returncode != 0:
                            raise RunsFailed(f"{dirs[s]}: exit {proc.returncode}; see {dirs[s].with_suffix('.log')}")
                curves = {s: read_valid(d / "valid.json") for s, d in dirs.items()}
                if not prune and watch(curves):
                    prune = True
                    for s in seeds:  # each running run stops at its next checkpoint; the others do not start
                        write_marker(dirs[s], PRUNE)
                    waiting.clear()
                if running:
                    time.sleep(self.poll_s)
        finally:
            self.stop()
        return {s: read_valid(d / "valid.json") for s, d in dirs.items()}

    def _start(self, run_dir: Path, overrides: list[str], seed: int) -> subprocess.Popen:
        resume = bool(list_checkpoints(run_dir)) if run_dir.is_dir() else False
        (run_dir / PRUNE).unlink(missing_ok=True)  # an earlier life's request: this one decides again
        args = [*self.base, *overrides, f"seed={seed}", f"run_dir={run_dir}"] + (["resume=true"] if resume else
                                                                                 ["overwrite=true"])
        log.info("run: %s%s", " ".join(args[len(self.base):]), " (resumed)" if resume else "")
        with open(run_dir.with_suffix(".log"), "a") as out:
            proc = subprocess.Popen([sys.executable, str(LAUNCH), *args], stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                                    env={**os.environ, "HYDRA_FULL_ERROR": "0"})
        self._procs.append(proc)
        return proc

    def signal(self, signum: int) -> None:
        """Hand a signal to the running runs (preemption: each saves a checkpoint and exits 3)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def stop(self) -> None:
        """Runs still going when the worker leaves (an error): asked to save, then ended."""
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        for p in live:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs = []
