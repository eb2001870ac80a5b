"""Several jobs of a sweep at once on their own cores: ``jobs_per_task`` packs on submitit_local (the SLURM
case is in test_slurm.py) and the ``parallel`` launcher's core shares."""

import json
import os
import re

import pytest

from rl_core.packing import core_shares
from tests.conftest import run_launch
from tests.test_sweep import SWEEP_TINY


def test_core_shares_split_the_cores_evenly_and_never_leave_a_job_without_one():
    assert core_shares([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert core_shares([4, 5, 6, 7, 8], 2) == [[4, 5, 6], [7, 8]]
    assert core_shares([3, 1, 2], 3) == [[1], [2], [3]]
    assert core_shares([0, 1], 3) == [[0], [1], [0]]  # more jobs than cores: round-robin
    assert core_shares([0, 1], 1) == [[0, 1]]


def _cores_and_threads(job):
    return re.search(r"machine: cores (\S+), (\d+) torch threads", (job / "launch.log").read_text()).groups()


@pytest.mark.slow
def test_a_packed_local_sweep_runs_each_job_on_its_share_and_a_failed_job_stops_no_other(tmp_path):
    """4 jobs, 2 an allocation: each allocation holds one job that fails at start-up and one that trains on
    its own core; the good ones finish, the failed ones are reported, and the sweep exits non-zero."""
    sweep = tmp_path / "sweep"
    proc = run_launch("--multirun", "hydra/launcher=submitit_local", "hydra.launcher.jobs_per_task=2",
                      "hydra.launcher.cpus_per_task=2", *SWEEP_TINY, "seed=1,2", "machine.num_samplers=2,0",
                      f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode != 0
    assert "packed: 4 jobs in 2 allocations of up to 2 jobs, 2 CPUs each" in proc.stderr + proc.stdout
    for good in ("0", "2"):
        assert json.loads((sweep / good / "DONE").read_text())["total_steps"] == 2000
    for bad in ("1", "3"):
        assert "machine.num_samplers: must be >= 1" in json.loads((sweep / bad / "FAILED").read_text())["error"]
    md = (sweep / "report.md").read_text()
    assert "| 1 | failed |" in md and "| 3 | failed |" in md
    assert "| `machine.num_samplers=2` | 2/2 |" in md


@pytest.mark.slow
def test_the_parallel_launcher_gives_each_running_job_its_own_cores(tmp_path):
    """``hydra/launcher=parallel`` with 2 jobs at once on this machine's cores: each job is pinned to one
    share (half the cores) and takes as many torch threads, not every core's."""
    sweep = tmp_path / "sweep"
    proc = run_launch("--multirun", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *SWEEP_TINY,
                      "seed=1,2,3", f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shares = [",".join(map(str, s)) for s in core_shares(sorted(os.sched_getaffinity(0)), 2)]
    for job in ("0", "1", "2"):
        cores, threads = _cores_and_threads(sweep / job)
        assert cores in shares and int(threads) == len(cores.split(","))
