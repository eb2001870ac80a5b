"""The study in a sweep folder: Optuna on a journal file (``study/journal.log``: appends under a lock, fit for
a shared file system where SQLite is not), and leases for running trials, which the journal lacks.

A worker holds a lease on each trial it runs (``study/leases/<trial>.json``, rewritten every ``BEAT_S``). A
RUNNING trial whose lease is older than ``lease_s``, or whose worker's process is gone from this host, was
lost (SIGKILL, preemption, a dead node): the next worker to look runs it again, same parameters and seeds,
resuming from its runs' checkpoints. Only finished and pruned trials count toward ``n_trials``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from rl_core.config_check import ConfigError

BEAT_S = 5.0
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def study_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "study"


def storage(sweep_dir: Path) -> JournalStorage:
    path = study_dir(sweep_dir) / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(name: str, settings: dict[str, Any]) -> optuna.pruners.BasePruner:
    startup = int(settings.get("pruner_startup_trials", 3))
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=3)
    if name == "wilcoxon":
        try:
            import scipy  # noqa: F401 - Optuna imports it only when the pruner first prunes, deep in a worker
        except ImportError:
            raise ConfigError("hydra.sweeper.pruner: wilcoxon needs scipy (pip install scipy)") from None
        return optuna.pruners.WilcoxonPruner(p_threshold=float(settings.get("wilcoxon_p", 0.1)),
                                             n_startup_steps=len(settings["seeds"]))
    raise ConfigError(f"hydra.sweeper.pruner: one of none, median, halving, wilcoxon; got {name!r}")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"hydra.sweeper.sampler: one of tpe, random; got {name!r}")


def load_study(sweep_dir: Path, settings: dict[str, Any], worker: int = 0) -> optuna.Study:
    """The study of ``sweep_dir`` (created by the sweeper); each worker samples with its own seed."""
    return optuna.load_study(study_name=settings["study_name"], storage=storage(sweep_dir),
                             sampler=make_sampler(settings["sampler"], int(settings["sampler_seed"]) + worker),
                             pruner=make_pruner(settings["pruner"], settings))


def create_or_check(sweep_dir: Path, settings: dict[str, Any], space_json: dict[str, str]) -> tuple[optuna.Study, bool]:
    """(study, new): a new study keeps its search space and seeds; an existing one must have the same, or the
    command is refused, naming what differs, and the study is left as it was."""
    names = optuna.get_all_study_names(storage(sweep_dir)) if (study_dir(sweep_dir) / "journal.log").is_file() else []
    if names:
        if settings["study_name"] not in names:
            raise ConfigError(f"hydra.sweeper.study_name: {sweep_dir} holds study {names[0]!r}, not "
                              f"{settings['study_name']!r}")
        study = optuna.load_study(study_name=settings["study_name"], storage=storage(sweep_dir))
        kept = study.user_attrs.get("search_space", {})
        for key in sorted(set(kept) | set(space_json)):
            if kept.get(key) != space_json.get(key):
                what = "not in" if key not in space_json else "new to" if key not in kept else "another range in"
                raise ConfigError(f"{key} (search space): {what} this command's search space than the study "
                                  f"in {study_dir(sweep_dir)} (another search space: use a new hydra.sweep.dir)")
        for key in ("seeds", "objective", "direction"):
            if study.user_attrs.get(key) != settings[key]:
                raise ConfigError(f"hydra.sweeper.{key}: the study in {study_dir(sweep_dir)} has "
                                  f"{study.user_attrs.get(key)!r}, this command {settings[key]!r}")
        return study, False
    study = optuna.create_study(study_name=settings["study_name"], storage=storage(sweep_dir),
                                direction=settings["direction"])
    study.set_user_attr("search_space", space_json)
    for key in ("seeds", "objective", "direction"):
        study.set_user_attr(key, settings[key])
    return study, True


class Leases:
    """Which RUNNING trials (and held-out units, by key) a live worker holds; ``claim`` picks the next trial under one lock of the study."""

    def __init__(self, sweep_dir: Path, worker: str, lease_s: float) -> None:
        self.dir = study_dir(sweep_dir) / "leases"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.worker, self.lease_s = worker, lease_s
        self.host, self.pid = socket.gethostname(), os.getpid()

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _path(self, number: int | str) -> Path:
        return self.dir / f"{number}.json"

    def write(self, number: int | str) -> None:
        tmp = self._path(number).with_suffix(f".tmp{self.pid}")
        tmp.write_text(json.dumps({"worker": self.worker, "host": self.host, "pid": self.pid, "beat": time.time()}))
        os.replace(tmp, self._path(number))

    def release(self, number: int | str) -> None:
        self._path(number).unlink(missing_ok=True)

    def alive(self, number: int | str) -> bool:
        """Whether another live worker holds trial ``number``: its lease is fresh and its process exists."""
        try:
            lease = json.loads(self._path(number).read_text())
        except (OSError, ValueError):
            return False
        if lease["worker"] == self.worker and lease["pid"] != self.pid:
            return False  # this worker's earlier life (requeued, or run again): its trial is ours again
        if lease["host"] == self.host and lease["pid"] != self.pid:
            try:
                os.kill(lease["pid"], 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return time.time() - lease["beat"] < self.lease_s

    @contextmanager
    def held(self, number: int | str) -> Iterator[None]:
        """Renew the lease of trial ``number`` while the block runs (a daemon thread), then drop it."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(BEAT_S):
                self.write(number)

        thread = threading.Thread(target=beat, daemon=True, name=f"lease-{number}")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(number)


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def claim(study: optuna.Study, leases: Leases, n_trials: int,
          fixed: dict[str, optuna.distributions.BaseDistribution]) -> tuple[int, dict[str, Any], bool] | None:
    """(trial number, params, rerun) of the next trial this worker runs, with its lease written; a lost
    RUNNING trial first, else a new one while finished + pruned + live running trials are fewer than
    ``n_trials``; None when there is nothing left to run."""
    with leases.locked():
        trials = study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        lost = [t for t in running if not leases.alive(t.number)]
        if lost:
            leases.write(lost[0].number)
            return lost[0].number, dict(lost[0].params), True
        if sum(t.state in COUNTED for t in trials) + len(running) >= n_trials:
            return None
        trial = study.ask(fixed)  # a WAITING (enqueued, warm-start) trial first
        leases.write(trial.number)
        return trial.number, dict(trial.params), False
