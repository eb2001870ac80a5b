"""One experiment on two learner processes (torchrun, gloo on CPU) against one process with all samplers."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, launch_env, run_launch, tb_scalars
from tests.test_train import TINY

pytestmark = pytest.mark.slow  # two processes and a rendezvous: make test, not make test-fast


def _torchrun(*args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(ROOT / "launch.py"), *args]


def _final(run_dir):
    ckpt = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    return torch.load(ckpt, weights_only=True)


def _rank_pids(run):
    """The process ids of a 2-rank run's ranks, from their logs."""
    logs = [run / "launch.log", run / "rank1" / "launch.log"]
    return [int(re.search(rf"distributed: rank {r} of 2 on \S+ \(pid (\d+)", log.read_text()).group(1))
            for r, log in enumerate(logs)]


def _one_process_and_two_ranks(launch_here, tmp_path, *args):
    """The final checkpoints of ``args`` trained by 1 process × 8 samplers (``tmp_path/one``) and by 2 torchrun
    ranks × 4 samplers (``tmp_path/two``)."""
    one = launch_here(*args, "machine.num_samplers=8", f"run_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(_torchrun(*args, "machine.num_samplers=4", "machine.torch_threads=1",
                                   f"run_dir={tmp_path / 'two'}"),
                         cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    return _final(tmp_path / "one"), _final(tmp_path / "two")


def test_two_ranks_of_four_samplers_train_what_one_process_with_eight_does(launch_here, tmp_path):
    a, b = _one_process_and_two_ranks(launch_here, tmp_path, *TINY)
    # 2 ranks x 4 samplers x 100 steps = one process's 8 x 100: the same env steps and schedule
    assert a["state"]["total_steps"] == b["state"]["total_steps"] == 4000
    assert len(b["samplers"]) == 8 and [s["rng"] for s in a["samplers"]] == [s["rng"] for s in b["samplers"]]
    largest = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    print(f"largest weight difference after 5 updates of 4 repeats: {largest:.3g}")
    assert largest <= 1e-6
    valid_a = [json.loads(line) for line in (tmp_path / "one" / "valid.json").read_text().splitlines()]
    valid_b = [json.loads(line) for line in (tmp_path / "two" / "valid.json").read_text().splitlines()]
    assert [v["training_steps"] for v in valid_a] == [v["training_steps"] for v in valid_b]
    # the gradient is averaged in another order than one process sums it: float rounding, not the same bits
    assert [v["reward"] for v in valid_b] == pytest.approx([v["reward"] for v in valid_a], rel=1e-3)
    # rank 0 owns the folder and writes the run's files; rank 1 only its log
    assert (tmp_path / "two" / "DONE").is_file() and (tmp_path / "two" / "rank1" / "launch.log").is_file()
    assert "distributed: rank 1 of 2" in (tmp_path / "two" / "rank1" / "launch.log").read_text()

    # the same experiment as a submitit_local job of two tasks (ranks from submitit): the same bits as torchrun's
    sweep = tmp_path / "sweep"
    local = run_launch("--multirun", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", *TINY,
                       "machine.num_samplers=4", "machine.torch_threads=1", f"hydra.sweep.dir={sweep}",
                       timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    c = _final(sweep / "0")
    assert all(torch.equal(b["model"][k], c["model"][k]) for k in b["model"])
    assert "distributed: rank 1 of 2" in (sweep / "0" / "rank1" / "launch.log").read_text()


def test_the_normalisers_of_two_ranks_hold_the_statistics_of_one_process_with_all_samplers(launch_here, tmp_path):
    """Observation and return statistics over every rank's samplers. One rollout: later ones drift apart, as
    LunarLander's contacts amplify the last-bit differences of the averaged gradient."""
    a, b = _one_process_and_two_ranks(launch_here, tmp_path, *TINY, "pipeline.stages.0.max_stage_steps=800",
                                      "model.normalize_obs=true", "pipeline.reward_scaling=true")
    for k in ("mean", "var"):
        assert torch.allclose(a["model"][f"obs_norm.stats.{k}"], b["model"][f"obs_norm.stats.{k}"], rtol=1e-9, atol=1e-12)
    assert a["model"]["obs_norm.stats.count"].item() == b["model"]["obs_norm.stats.count"].item() == 800 + 1e-4
    # the running returns of all 8 samplers, rank 0's first; the return statistics of all of them
    assert torch.allclose(a["reward_scaler"]["returns"], b["reward_scaler"]["returns"], rtol=1e-9)
    assert b["reward_scaler"]["stats"]["var"].item() == pytest.approx(a["reward_scaler"]["stats"]["var"].item(), rel=1e-9)
    assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) <= 1e-6


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_fails_the_others_within_the_collective_timeout(tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen(_torchrun(*TINY, "pipeline.stages.0.max_stage_steps=400000", "machine.num_samplers=2",
                                      "machine.torch_threads=1", "machine.collective_timeout_s=10", f"run_dir={run}"),
                            cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("ckpt_*.pt")) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = _rank_pids(run)[1]
        os.kill(pid, sig)
        t0 = time.monotonic()
        # rank 0 stops in one line saying what happened, within the 10 s timeout (and some slack for the rollout)
        while "error: rank 0 of 2 on " not in (run / "launch.log").read_text() and time.monotonic() - t0 < 40:
            time.sleep(0.2)
        assert time.monotonic() - t0 < 40, (run / "launch.log").read_text()[-3000:]
        # the heartbeats name the rank that stopped, and its node
        assert re.search(r"rank 1 on \S+ gave no heartbeat for 2.5 s", (run / "launch.log").read_text())
        if sig == signal.SIGKILL:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode != 0
            # torchrun's summary names the rank that died, with its signal
            assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out) and "SIGKILL" in out, out[-3000:]
    finally:  # torchrun would wait 30 s more for a stopped rank, which runs in a session of its own
        for target in (lambda: os.kill(pid, signal.SIGKILL), lambda: os.killpg(proc.pid, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError, NameError):
                target()
        proc.wait()


def test_a_two_rank_run_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """With the normalisers on: each rank's running returns come back from the checkpoint to the right rank."""
    args = [*TINY, "machine.num_samplers=2", "machine.torch_threads=1", "model.normalize_obs=true",
            "pipeline.reward_scaling=true"]
    whole = subprocess.run(_torchrun(*args, f"run_dir={tmp_path / 'whole'}"), cwd=ROOT, env=launch_env(),
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(*args, f"run_dir={run}"), cwd=ROOT, env=launch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "ckpt_0000001600.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    # torchrun and both ranks at once (torchrun starts each rank in a session of its own)
    for pid in _rank_pids(run):
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("ckpt_*.pt"))
    assert saved and saved[-1] < 4000 and not (run / "DONE").exists(), saved
    # one process cannot take over two ranks' samplers: refused in one line, nothing touched
    alone = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, f"run_dir={run}", "resume=true"],
                           cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and "holds the states of 4 samplers" in alone.stderr + alone.stdout
    assert "resume with 2 rank(s)" in alone.stderr + alone.stdout
    resumed = subprocess.run(_torchrun(*args, f"run_dir={run}", "resume=true"), cwd=ROOT, env=launch_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"at step {saved[-1]}" in (run / "launch.log").read_text()  # resumed where the kill left it
    a, b = _final(tmp_path / "whole"), _final(run)
    assert a["state"]["total_steps"] == b["state"]["total_steps"] == 4000
    for name in a["model"]:  # weights and observation statistics
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["reward_scaler"]["returns"].shape == (4,)  # 2 ranks x 2 samplers
    assert torch.equal(a["reward_scaler"]["returns"], b["reward_scaler"]["returns"])
    assert all(torch.equal(v, b["reward_scaler"]["stats"][k]) for k, v in a["reward_scaler"]["stats"].items())


def test_the_straggler_cut_off_ends_a_slow_ranks_rollouts_early(tmp_path):
    """Rank 1's env steps sleep 5 ms (tests/slow_env.py); rank 0 collects its 100 steps in a fraction of that.
    With ``sync_frac=0.5`` rank 1 stops once rank 0 is done, after at least 25% of its steps."""
    args = [*TINY, "pipeline.stages.0.max_stage_steps=2000", "machine.num_samplers=2", "machine.torch_threads=1",
            "env.env_id=tests.slow_env:SlowLunarLander-v0", "machine.sync_frac=0.5", "machine.min_rollout_frac=0.25"]
    proc = subprocess.run(_torchrun(*args, f"run_dir={tmp_path}"), cwd=ROOT, env=launch_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fills = [v for _, v in tb_scalars(tmp_path)["train/rollout_fill"]]
    # a whole rollout is 2 ranks x 2 samplers x 100 steps; rank 0's 200 and at least 2 x 25 of rank 1's
    assert fills and all(0.625 <= f < 1.0 for f in fills), fills
    assert sum(fills) / len(fills) < 0.8, fills
    final = _final(tmp_path)
    # the counters add the steps each rank really collected: not a multiple of whole rollouts
    steps = final["state"]["total_steps"]
    assert 2000 <= steps < 400 * final["state"]["rollouts"], final["state"]
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == steps
