"""A run folder belongs to one run: a new training never writes into a folder that holds another run, and two
processes never work in one folder at once. Until a command owns its folder it writes nothing there: Hydra's
record of the command (``.hydra/``) and the log file are written only once the checks have passed."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rl_core.checkpoint import CHECKPOINT_DIR, list_checkpoints
from rl_core.config_check import ConfigError
from rl_core.markers import DONE, FAILED, PREEMPTED
from rl_core.tracking.console import open_run_logs

LOCK = ".lock"
# What a training run writes into its folder: what overwrite=true deletes (nothing else is touched).
RUN_FILES = (CHECKPOINT_DIR, "tb", "wandb", "valid.json", "config.yaml", "git.txt", "git.diff", DONE, FAILED,
             PREEMPTED, ".hydra", "launch.log")


class RunDirTaken(ConfigError):
    """The run folder holds another run, or another process works in it: refused, and nothing written."""


def describe_run(run_dir: Path) -> str | None:
    """What earlier run ``run_dir`` holds ("a finished run (1,200,000 env steps)", ...), or None when it holds none."""
    found = list_checkpoints(run_dir)
    if (run_dir / DONE).is_file():
        return f"a finished run ({found[-1][0]:,} env steps)" if found else "a finished run"
    if found:
        return f"a run with {len(found)} checkpoint(s), the newest at {found[-1][0]:,} env steps"
    if (run_dir / "config.yaml").is_file() or (run_dir / "valid.json").is_file():
        return "a run that saved no checkpoint"
    return None


class RunDirLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for as long as the process lives (the kernel drops it when
    the process ends, however it ends, so a killed run never leaves its folder locked)."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self.fd, 200).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise RunDirTaken(f"run_dir: {run_dir} is in use by {holder}; wait for it to end, or choose "
                              "another run_dir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_held: list[RunDirLock] = []  # held until the command ends (launch.main releases them)


def check_free(run_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """Refuse (``RunDirTaken``) a new training into a folder that holds a run, unless ``resume`` continues it
    or ``overwrite`` replaces it; returns what ``overwrite`` will delete (None: nothing). Writes nothing."""
    earlier = None if resume else describe_run(run_dir)
    if earlier and not overwrite:
        raise RunDirTaken(f"run_dir: {run_dir} holds {earlier}; resume=true continues it, overwrite=true starts "
                          "over (deleting its checkpoints, logs and results), or choose another run_dir")
    return earlier


def claim_for_training(run_dir: Path, cfg: DictConfig, resume: bool, overwrite: bool) -> None:
    """Take ``run_dir`` for a training run, or refuse (``RunDirTaken``) without writing anything into it.

    A folder that holds a run is taken only to continue it (``resume``) or, with ``overwrite``, after deleting
    that run's own files (``RUN_FILES``); another process working in it is always refused. ``cfg``: the config
    as composed, for Hydra's record of the command.
    """
    earlier = check_free(run_dir, resume, overwrite)
    _held.append(RunDirLock(run_dir))
    if earlier:
        for name in RUN_FILES:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    own_it(run_dir, cfg)


def release_all() -> None:
    """Drop this process's run folder locks (a process that runs several jobs one after another)."""
    while _held:
        _held.pop().release()


def own_it(job_dir: Path, cfg: DictConfig | None = None) -> None:
    """Now that the command owns ``job_dir``: write Hydra's record of the command (``.hydra/``, given the
    composed ``cfg``) and open the log file, with the lines logged so far."""
    if cfg is not None:
        write_hydra_record(job_dir, cfg)
    open_run_logs()


def write_hydra_record(job_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra itself writes them (``hydra.output_subdir`` is off so
    that Hydra does not write them before the checks): the composed config, Hydra's own, the overrides."""
    hc = HydraConfig.get()
    out = job_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hc)}), out / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), out / "overrides.yaml")
