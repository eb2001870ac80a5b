"""Shared helpers: run launch.py as a user would, in a subprocess or (faster) in this process."""

from __future__ import annotations

import os
import signal
import io
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import launch  # noqa: F401 - sets what launch.py sets before torch and MuJoCo load (MUJOCO_GL, GOMP_SPINCOUNT)

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


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """``launch.py ARGS`` through its ``run`` in this process: the same composition, checks, outputs, log
    lines and exit code as :func:`run_launch`, without a new interpreter's start-up. Everything written to
    file descriptors 1 and 2 (Python, C code, child processes) comes back as ``stderr``. For runs whose
    process boundary is not the point; signals and kills need :func:`run_launch`."""
    import launch
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    saved_argv, saved_streams = sys.argv, (sys.stdout, sys.stderr)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    code: int | str | None = 0
    with tempfile.TemporaryFile() as out:
        sys.stdout.flush(), sys.stderr.flush()
        saved_fds = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        text = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
        sys.stdout = sys.stderr = text
        # imported, not run as a script, Hydra would look for conf/ as a package: name the folder
        sys.argv = [str(ROOT / "launch.py"), "--config-path", str(ROOT / "conf"), *args]
        try:
            launch.run()
        except SystemExit as e:
            code = e.code
        except BaseException:  # noqa: BLE001 - a traceback, as the interpreter would print it
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            for handler in root.handlers[:]:
                if handler not in saved_handlers:
                    root.removeHandler(handler)
                    handler.close()
            root.handlers[:], root.level = saved_handlers, saved_level
            text.close()
            os.dup2(saved_fds[0], 1), os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            sys.argv, (sys.stdout, sys.stderr) = saved_argv, saved_streams
        out.seek(0)
        output = out.read().decode(errors="replace")
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["launch.py", *args], returncode, "", output)


@pytest.fixture
def launch():
    """``launch.py`` in a subprocess, as a user runs it."""
    return run_launch


@pytest.fixture
def launch_here():
    """``launch.py`` in this process (:func:`run_in_process`)."""
    return run_in_process


# W&B with no account: offline, nothing read from the developer's own ~/.netrc or W&B settings.
WANDB_OFFLINE_ENV = {"WANDB_API_KEY": None, "WANDB_MODE": None, "WANDB_BASE_URL": None, "WANDB_SILENT": "true"}


def kill_at_checkpoint(*args: str, checkpoint: Path) -> list[int]:
    """Start ``launch.py ARGS``, SIGKILL it as soon as ``checkpoint`` exists; the env steps of the checkpoints
    it left in that folder, in order."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=launch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return sorted(int(p.stem.split("_")[1]) for p in checkpoint.parent.glob("ckpt_*.pt"))


def stop_after_first_checkpoint(*args: str, run_dir: Path, env: dict | None = None,
                                signum: int = signal.SIGTERM, delay: float = 0.0) -> subprocess.CompletedProcess:
    """Start ``launch.py ARGS``, send ``signum`` ``delay`` s after its first checkpoint is in ``run_dir``, wait for it."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=launch_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("ckpt_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")



# make test runs the files on xdist workers (--dist loadfile: a file's tests on one worker, so the SLURM tests share
# one cluster); the longest files first, so no long one starts last (test-suite times: docs/performance.md)
LONGEST_FIRST = ("test_slurm.py", "test_distributed.py", "test_tune.py", "test_offpolicy_runs.py", "test_sweep.py",
                 "test_train.py", "test_wandb.py", "test_packing.py", "test_suite.py")


def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))
