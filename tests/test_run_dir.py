"""A run folder belongs to one run: a new training never overwrites one, two processes never share one, and a
refused command leaves the folder exactly as it was."""

import json
import subprocess
import sys
import time

import pytest

from rl_core.run_dir import RunDirLock
from tests.conftest import ROOT, launch_env
from tests.test_bad_input import SMOKE, _assert_one_line_error
from tests.test_train import TINY


def _snapshot(folder):
    """Every file under ``folder`` with its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(launch_here, tmp_path):
    run = tmp_path / "run"
    assert launch_here(*SMOKE, f"run_dir={run}").returncode == 0
    return run


def test_a_new_training_into_a_finished_run_is_refused_and_the_run_left_as_it_was(launch_here, finished):
    before = _snapshot(finished)
    assert {p.name for p in before} >= {"config.yaml", "valid.json", "DONE", "launch.log", "overrides.yaml"}
    for args in ([], ["seed=7"], ["pipeline.num_steps=50"]):
        proc = launch_here(*SMOKE, f"run_dir={finished}", *args)
        _assert_one_line_error(proc, f"run_dir: {finished} holds a finished run (1,600 env steps); resume=true "
                                     "continues it, overwrite=true starts over")
        assert proc.returncode == 2
    assert _snapshot(finished) == before


@pytest.mark.parametrize("args,fragment", [
    (["resume=true", "machine.torch_threads=0"], "machine.torch_threads: must be >= 1"),
    (["mode=test", "test.select=steps", "test.steps=[123]"], "test.steps: no checkpoint at [123]"),
    (["mode=test", "trusted_targets=oops"], "trusted_targets: expected a list"),
])
def test_a_refused_command_writes_nothing_into_the_run(launch_here, finished, args, fragment):
    before = _snapshot(finished)
    _assert_one_line_error(launch_here(*SMOKE, f"run_dir={finished}", *args), fragment)
    assert _snapshot(finished) == before


def test_overwrite_starts_the_run_over(launch_here, finished):
    (finished / "valid.json").write_text('{"training_steps": 999999, "reward": 1.0}\n')
    (finished / "notes.txt").write_text("mine")  # not a file a run writes: kept
    proc = launch_here(*SMOKE, f"run_dir={finished}", "overwrite=true", "seed=7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line)["training_steps"] for line in (finished / "valid.json").read_text().splitlines()]
    assert steps == [800, 1600]
    assert "seed: 7" in (finished / "config.yaml").read_text()
    assert (finished / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_live_run_folder_is_refused_to_a_second_process_and_free_once_the_first_is_killed(launch_here, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "pipeline.stages.0.max_stage_steps=4000000", f"run_dir={run}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=launch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("ckpt_*.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        record = _snapshot(run / ".hydra")
        for extra in (["resume=true"], ["overwrite=true"]):
            second = launch_here(*args, *extra)
            _assert_one_line_error(second, f"run_dir: {run} is in use by pid {proc.pid} since ")
        assert _snapshot(run / ".hydra") == record
        assert "is in use" not in (run / "launch.log").read_text()
    finally:
        proc.kill()
        proc.wait()
    RunDirLock(run).release()  # the kill released the lock: a resume may take the folder


@pytest.mark.slow
def test_default_run_folders_of_two_runs_started_together_differ():
    cmd = [sys.executable, str(ROOT / "launch.py"), "--cfg", "job", "--resolve", "--package", "_global_"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    dirs = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        dirs.append(next(line for line in out.splitlines() if line.startswith("run_dir:")))
    assert dirs[0] != dirs[1], dirs


def test_a_job_requeued_before_its_first_checkpoint_starts_over_in_its_folder(launch_here, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")  # what the first attempt left before it was preempted
    (run / "valid.json").write_text("")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    proc = launch_here(*SMOKE, f"run_dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no checkpoint yet; this job starts from scratch" in proc.stderr
    assert json.loads((run / "DONE").read_text())["total_steps"] == 1600
