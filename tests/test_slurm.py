"""Sweeps through a real SLURM cluster of two nodes on this machine (scripts/slurm_local.sh start --nodes 2)
and the submitit launchers: single jobs, one experiment on two ranks of one node or across the two nodes, a
node that dies.

The cluster needs root and Debian's packages: in CI (root, CI=true) these tests run; elsewhere without
root they skip, saying why. Every launch has an outer timeout: a stuck job fails the test, never hangs it.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, WANDB_OFFLINE_ENV, launch_env, run_launch
from tests.test_sweep import SWEEP_TINY

pytestmark = pytest.mark.slow  # end-to-end: make test, not make test-fast (its tests share one worker: --dist loadfile)

SCRIPT = ROOT / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm():
    """Starts the local two-node cluster (installing it if needed); yields the environment to launch with."""
    if os.geteuid() != 0 and not shutil.which("sbatch"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the SLURM tests: it runs as root, which the local cluster needs")
        pytest.skip("the local SLURM cluster needs root (apt-get install, munge, slurmd); run as root or in CI")
    was_up = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("sinfo") else ""
    started = subprocess.run(["bash", str(SCRIPT), "start", "--nodes", "2"], capture_output=True, text=True,
                             timeout=600)
    assert started.returncode == 0, started.stderr
    env = {"PATH": f"{ROOT / 'scripts' / 'slurm'}:{os.environ['PATH']}", **WANDB_OFFLINE_ENV}
    yield env
    if not was_up or "idle" not in was_up:  # leave a cluster that was already running as it was
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


def _slurm_states(sweep):
    """{job dir name: SLURM state} from squeue (finished jobs stay listed for MinJobAge)."""
    ids = {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.is_dir() and p.name[0].isdigit()}
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%i %T"],
                         capture_output=True, text=True).stdout
    return {line.split()[0].split("_")[1]: line.split()[1] for line in out.splitlines() if "_" in line}


def test_three_seed_sweep_completes_on_slurm(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_launch("--multirun", "hydra/launcher=submitit_slurm", *SWEEP_TINY, "seed=1,2,3",
                      f"hydra.sweep.dir={sweep}", env=slurm, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1", "2"):
        done = json.loads((sweep / job / "DONE").read_text())
        assert done["total_steps"] == 2000 and "reward" in done
        assert sorted(p.name for p in (sweep / job / "checkpoints").iterdir()) == \
            ["ckpt_0000000800.pt", "ckpt_0000001600.pt", "ckpt_0000002000.pt"]
    # submitit returns once every job has written its result; SLURM calls a job COMPLETED a moment later,
    # when its batch script has exited (a CI run saw the last job still RUNNING here).
    _wait_for(lambda: not {"PENDING", "RUNNING", "COMPLETING"} & set(_slurm_states(sweep).values()), 60,
              "the sweep's jobs to end in SLURM")
    assert _slurm_states(sweep) == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
    assert "| `(all jobs)` | 3/3 |" in (sweep / "report.md").read_text()
    # each job's stdout/stderr is kept by submitit inside the sweep dir
    assert any("done: 2000 env steps" in p.read_text() for p in (sweep / ".submitit").rglob("*_log.err"))


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_usr2_requeues_and_the_job_resumes_to_the_same_result(slurm, tmp_path):
    """Preempted twice with SIGUSR2, the job ends at the same step with the same weights and metrics as an
    uninterrupted run of the same seed, and one W&B run id."""
    settings = [*SWEEP_TINY, "pipeline.stages.0.max_stage_steps=24000", "pipeline.save_interval=4000", "seed=5"]
    whole = run_launch(*settings, f"run_dir={tmp_path / 'whole'}", env=slurm)
    assert whole.returncode == 0, whole.stderr

    sweep = tmp_path / "sweep"
    job = sweep / "0"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--multirun",
         "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5", *settings, "logger=tb_wandb",
         f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=launch_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stops = []
        for target in (4000, 12000):  # preempt after the first and after the third checkpoint
            _wait_for(lambda: (job / "checkpoints" / f"ckpt_{target:010d}.pt").is_file()
                      and not (job / "PREEMPTED").exists(), 240, f"checkpoint {target}")
            # submitit's folder for the job is named by its SLURM job id ("12", or "12_0" in an array)
            job_id = next((sweep / ".submitit").rglob("*_submitted.pkl")).parent.name
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
            _wait_for(lambda: (job / "PREEMPTED").is_file(), 60, "the job to save on SIGUSR2")
            stops.append(json.loads((job / "PREEMPTED").read_text())["steps"])
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert stops[0] >= 4000 and stops[1] >= 12000
    log = (job / "launch.log").read_text()
    assert log.count("requeued job: resuming") == 2
    for s in stops:
        assert f"at step {s}" in log
    # same step count, same final metrics and weights as the uninterrupted run
    assert json.loads((job / "DONE").read_text()) == json.loads((tmp_path / "whole" / "DONE").read_text())
    a = torch.load(tmp_path / "whole" / "checkpoints" / "ckpt_0000024000.pt", weights_only=True)["model"]
    b = torch.load(job / "checkpoints" / "ckpt_0000024000.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # one W&B run, in three offline parts
    runs = list((job / "wandb").glob("offline-run-*"))
    assert len(runs) == 3 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1
    # and validated at the same steps: the saves on the signal did not move the checkpoint schedule
    def valid_steps(d):
        return [json.loads(line)["training_steps"] for line in (d / "valid.json").read_text().splitlines()]
    assert valid_steps(job) == valid_steps(tmp_path / "whole") == list(range(4000, 24001, 4000))


def test_a_failing_job_is_reported_and_the_launcher_exits_nonzero(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = run_launch("--multirun", "hydra/launcher=submitit_slurm", *SWEEP_TINY, "seed=1",
                      "machine.num_samplers=4,0", f"hydra.sweep.dir={sweep}", env=slurm, timeout=300)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 300
    assert "machine.num_samplers: must be >= 1" in json.loads((sweep / "1" / "FAILED").read_text())["error"]
    errs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*_1/*_log.err"))
    assert "must be >= 1" in errs
    assert _slurm_states(sweep)["1"] == "FAILED"
    md = (sweep / "report.md").read_text()
    assert "| 1 | failed |" in md and "| `machine.num_samplers=4` | 1/1 |" in md


@pytest.mark.parametrize("nodes,tasks_per_node", [(1, 2), (2, 1)], ids=["one-node", "two-nodes"])
def test_a_two_task_job_is_one_experiment_and_preempted_it_resumes_to_torchruns_weights(slurm, tmp_path, nodes,
                                                                                        tasks_per_node):
    """Two ranks as two tasks of one node or one task on each of two nodes (rank and rendezvous from submitit,
    on the first node's name). Preempted with SIGUSR2, every task stops at the same rollout, one checkpoint is
    written, the job is requeued once and ends with the weights of the same experiment run uninterrupted by
    torchrun, bit for bit."""
    settings = [*SWEEP_TINY, "pipeline.stages.0.max_stage_steps=12000", "pipeline.save_interval=4000", "seed=5",
                "machine.num_samplers=2", "machine.torch_threads=1"]
    whole = tmp_path / "whole"
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(ROOT / "launch.py"), *settings, f"run_dir={whole}"],
                              cwd=ROOT, env=launch_env(slurm), capture_output=True, text=True, timeout=300)
    assert torchrun.returncode == 0, torchrun.stdout[-3000:] + torchrun.stderr[-3000:]

    sweep = tmp_path / "sweep"
    job = sweep / "0"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--multirun", "hydra/launcher=submitit_slurm",
         "hydra.launcher.timeout_min=5", f"hydra.launcher.nodes={nodes}",
         f"hydra.launcher.tasks_per_node={tasks_per_node}", "hydra.launcher.cpus_per_task=1",
         *settings, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=launch_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (job / "checkpoints" / "ckpt_0000004000.pt").is_file(), 240, "the first checkpoint")
        job_id = next((sweep / ".submitit").rglob("*_submitted.pkl")).parent.name
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # reaches every task on every node
        _wait_for(lambda: (job / "PREEMPTED").is_file(), 60, "the job to save on SIGUSR2")
        stopped = json.loads((job / "PREEMPTED").read_text())["steps"]
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    # both tasks trained, as ranks 0 and 1 of one process group, on the nodes asked for; rank 1 wrote only
    # its own log
    log = (job / "launch.log").read_text()
    rank1_log = (job / "rank1" / "launch.log").read_text()
    node0, node1 = (re.search(rf"distributed: rank {r} of 2 on (\S+) ", text).group(1)
                    for r, text in enumerate((log, rank1_log)))
    assert (node0 == node1) if nodes == 1 else {node0, node1} == {"n1", "n2"}
    assert log.count("requeued job: resuming") == 1 and f"at step {stopped}" in log
    # one checkpoint on the signal, beside the scheduled ones
    names = sorted(p.name for p in (job / "checkpoints").iterdir())
    assert names == sorted({f"ckpt_{s:010d}.pt" for s in (4000, 8000, 12000, stopped)})
    assert json.loads((job / "DONE").read_text()) == json.loads((whole / "DONE").read_text())
    a = torch.load(whole / "checkpoints" / "ckpt_0000012000.pt", weights_only=True)
    b = torch.load(job / "checkpoints" / "ckpt_0000012000.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [s["rng"] for s in a["samplers"]] == [s["rng"] for s in b["samplers"]] and len(b["samplers"]) == 4


def _kill_node(node):
    """What a node's death looks like to the rest of the cluster: its slurmd, the job steps' slurmstepd and
    every process of its tasks (SLURMD_NODENAME=node in their environment) SIGKILLed at once."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                procs[int(d.name)] = (ppid, f"SLURMD_NODENAME={node}".encode() in (d / "environ").read_bytes(),
                                      (d / "cmdline").read_bytes().decode(errors="replace"))
    tasks = {pid for pid, (_, on_node, _) in procs.items() if on_node}
    steps = {procs[pid][0] for pid in tasks if procs.get(procs[pid][0], (0, 0, ""))[2].startswith("slurmstepd")}
    slurmd = int(Path(f"/var/lib/rl-launcher-slurm/pids/slurmd-{node}.pid").read_text())
    for pid in {slurmd} | tasks | steps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return tasks


def test_a_node_that_dies_fails_the_two_node_job_naming_the_rank_and_the_node(slurm, tmp_path):
    """Node n2 dies mid-training (its slurmd and tasks killed): rank 0 on n1 fails within the collective
    timeout, the FAILED marker names rank 1 and n2, the job is cancelled instead of waiting for SLURM to
    declare the node down, and the sweep exits non-zero; never a hang."""
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--multirun", "hydra/launcher=submitit_slurm",
         "hydra.launcher.timeout_min=5", "hydra.launcher.nodes=2", "hydra.launcher.cpus_per_task=1",
         *SWEEP_TINY, "pipeline.stages.0.max_stage_steps=400000", "machine.num_samplers=2",
         "machine.torch_threads=1", "machine.collective_timeout_s=20", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=launch_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (job / "checkpoints" / "ckpt_0000000800.pt").is_file(), 240, "the first checkpoint")
        assert _kill_node("n2")
        t0 = time.monotonic()
        _wait_for(lambda: (job / "FAILED").is_file(), 20 + 10, "rank 0 to fail within the collective timeout")
        failed_after = time.monotonic() - t0
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        restarted = subprocess.run(["bash", str(SCRIPT), "start", "--nodes", "2"], capture_output=True, text=True,
                                   timeout=120)  # the node comes back for the tests after this one
    assert proc.returncode != 0 and failed_after < 20, (failed_after, out[-3000:])
    error = json.loads((job / "FAILED").read_text())["error"]
    assert error.startswith("RanksFailed: rank 0 of 2 on n1: ")
    assert "rank 1 on n2 gave no heartbeat" in error
    assert "cancelling SLURM job" in (job / "launch.log").read_text()
    assert "| 0 | failed |" in (sweep / "report.md").read_text()
    assert restarted.returncode == 0, restarted.stderr


def _report_table(sweep):
    """The sweep report's table rows (the lines that do not name the sweep's folder)."""
    return [line for line in (sweep / "report.md").read_text().splitlines() if line.startswith("|")]


def test_a_packed_sweep_runs_two_jobs_an_allocation_and_preempted_resumes_every_job_exactly(slurm, tmp_path):
    """``jobs_per_task=2``: 4 jobs in 2 SLURM allocations of 2 CPUs, each job on its own core. The first
    allocation, preempted with SIGUSR2 after its jobs' first checkpoint, is requeued once; its two jobs resume
    and end as uninterrupted runs of the same seeds, and the report is the unpacked sweep's."""
    settings = [*SWEEP_TINY, "pipeline.stages.0.max_stage_steps=12000", "pipeline.save_interval=4000",
                "machine.num_samplers=2"]
    unpacked = tmp_path / "unpacked"
    ref = run_launch("--multirun", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", *settings,
                     "seed=1,2,3,4", f"hydra.sweep.dir={unpacked}", env=slurm, timeout=400)
    assert ref.returncode == 0, ref.stderr[-3000:]

    sweep = tmp_path / "packed"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--multirun", "hydra/launcher=submitit_slurm",
         "hydra.launcher.timeout_min=5", "hydra.launcher.jobs_per_task=2", "hydra.launcher.cpus_per_task=2",
         *settings, "seed=1,2,3,4", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=launch_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = [sweep / "0", sweep / "1"]
        _wait_for(lambda: all((j / "checkpoints" / "ckpt_0000004000.pt").is_file() for j in first), 240,
                  "the first allocation's jobs' first checkpoints")
        array = next((sweep / ".submitit").rglob("*_submitted.pkl")).parent.name.split("_")[0]
        subprocess.run(["scancel", "--signal=USR2", f"{array}_0"], check=True)  # reaches both packed jobs
        _wait_for(lambda: all((j / "PREEMPTED").is_file() for j in first), 60, "both jobs to save on SIGUSR2")
        stops = [json.loads((j / "PREEMPTED").read_text())["steps"] for j in first]
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "packed: 4 jobs in 2 allocations of up to 2 jobs, 2 CPUs each" in out
    # two jobs an allocation, each pinned to one of its cores, with one torch thread
    cores = [re.search(r"machine: cores (\S+), (\d+) torch threads", (sweep / str(j) / "launch.log").read_text()).groups()
             for j in range(4)]
    assert all(threads == "1" for _, threads in cores) and {cores[0][0], cores[1][0]} == {"0", "1"}
    for job, stop in zip(first, stops):
        log = (job / "launch.log").read_text()
        assert log.count("requeued job: resuming") == 1 and f"at step {stop}" in log
    # every job as in the unpacked sweep: same steps, metrics and weights; the same report
    for j in range(4):
        assert json.loads((sweep / str(j) / "DONE").read_text()) == json.loads((unpacked / str(j) / "DONE").read_text())
        a = torch.load(unpacked / str(j) / "checkpoints" / "ckpt_0000012000.pt", weights_only=True)["model"]
        b = torch.load(sweep / str(j) / "checkpoints" / "ckpt_0000012000.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert _report_table(sweep) == _report_table(unpacked)


def test_a_tuning_study_runs_its_workers_as_slurm_jobs_that_share_one_journal_and_survive_preemption(slurm, tmp_path):
    """hydra/launcher=submitit_slurm with two workers: two SLURM jobs take trials from one study as each
    ends (no batch barrier); one is preempted (SIGUSR2) mid-trial, requeued, and reruns its trial from where
    its runs stopped; the study counts exactly its trials, each seed's validations once."""
    from tests.test_tune import FAST, _counted, _study

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--multirun", *FAST, "hydra.sweeper.n_trials=8",
         "hydra.sweeper.workers=2", "+hydra.sweeper.runner.delay_s=0.1", "hydra/launcher=submitit_slurm",
         "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=launch_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _counted(sweep) >= 2, 240, "two counted trials")
        array = next((sweep / ".submitit").rglob("*_submitted.pkl")).parent.name.split("_")[0]
        subprocess.run(["scancel", "--signal=USR2", f"{array}_0"], check=True)
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    trials = _study(sweep).trials
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 8 and len(trials) == 8
    logs = {p.parent.name: p.read_text() for p in (sweep / ".submitit").rglob("*_0_log.err")}
    ran = [set(re.findall(r"worker (\d): trial (\d+)", text)) for text in logs.values()]
    assert len(ran) == 2 and all(ran) and {w for r in ran for w, _ in r} == {"0", "1"}
    preempted = logs[f"{array}_0"]
    assert "tuning worker 0 stopped by SIGUSR2" in preempted  # then requeued: its trial rerun by whichever worker looked first
    assert any("(rerun, resuming its runs)" in text for text in logs.values())
    for t in trials:
        for seed in (1, 2):
            steps = [json.loads(line)["training_steps"] for line in
                     (sweep / "trials" / f"{t.number:04d}" / f"seed_{seed}" / "valid.json").read_text().splitlines()]
            assert steps == list(range(100, 1001, 100))  # the preempted trial went on where it stopped
    assert json.loads((sweep / "study" / "summary.json").read_text())["ledger"]["trials_finished"] == 8
