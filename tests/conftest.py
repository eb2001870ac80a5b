"""Shared helpers: run launch.py in a subprocess as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_launch(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python launch.py ARGS`` from the repo root; output captured as text. ``env`` adds to the
    environment; a None value removes that variable."""
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=launch_env(env))


def launch_env(env: dict | None = None) -> dict:
    """This process's environment plus ``env``; a None value in ``env`` removes that variable."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return {k: v for k, v in full_env.items() if v is not None}


def tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's TensorBoard scalars: tag -> [(step, value)], every event kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def launch():
    return run_launch


# W&B with no account: offline, nothing read from the developer's own ~/.netrc or W&B settings.
WANDB_OFFLINE_ENV = {"WANDB_API_KEY": None, "WANDB_MODE": None, "WANDB_BASE_URL": None, "WANDB_SILENT": "true"}


def stop_after_first_checkpoint(*args: str, run_dir: Path, env: dict | None = None,
                                signum: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    """Start ``launch.py ARGS``, send ``signum`` once its first checkpoint is in ``run_dir``, wait for it."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=launch_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("ckpt_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
