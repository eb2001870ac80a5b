"""Tiny trainings through launch.py: outputs, TensorBoard tags, kill + resume, graceful stop."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, kill_at_checkpoint, launch_env, stop_after_first_checkpoint, tb_scalars

pytestmark = pytest.mark.slow  # end-to-end: make test, not make test-fast

# 4 samplers x 100 steps = 400 env steps a rollout; 10 rollouts; checkpoint every 2.
TINY = ["experiment=smoke", "pipeline.stages.0.max_stage_steps=4000", "pipeline.num_steps=100",
        "pipeline.save_interval=800", "pipeline.metric_accumulate_interval=400", "pipeline.update_repeats=4"]


def _final_weights(run_dir):
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    state = torch.load(ckpts[-1], weights_only=True)
    return state["state"]["total_steps"], state["model"]


def test_training_writes_checkpoints_events_and_provenance(launch_here, tmp_path):
    proc = launch_here(*TINY, f"run_dir={tmp_path}", "pipeline.validate_initial_weights=true")
    assert proc.returncode == 0, proc.stderr
    steps = [int(p.stem.split("_")[1]) for p in sorted((tmp_path / "checkpoints").glob("ckpt_*.pt"))]
    assert steps == [800, 1600, 2400, 3200, 4000]
    tags = tb_scalars(tmp_path)
    for tag in ["train/reward", "train/ep_length", "train/success", "train/lr", "train/total_loss",
                "train/pipeline_stage", "train/approx_fps", "train/env_steps_per_s", "train/ppo_loss/ppo_total",
                "train/ppo_loss/value", "train/ppo_loss/action", "train/ppo_loss/entropy",
                "valid/reward", "valid/ep_length", "valid/success"]:
        assert tag in tags, sorted(tags)
    assert [s for s, _ in tags["train/lr"]] == list(range(400, 4001, 400))
    # linear decay to 0 over the 4000 steps: lr after 2000 steps is half of 1e-3
    assert dict(tags["train/lr"])[2000] == pytest.approx(5e-4)
    assert all(abs(v - 0.7258) < 1e-4 for _, v in tags["train/ppo_loss/entropy"])
    valid = [json.loads(line) for line in (tmp_path / "valid.json").read_text().splitlines()]
    assert [v["training_steps"] for v in valid] == [0] + steps  # the initial weights first
    assert valid[0]["checkpoint"] is None
    assert all([e["seed"] for e in v["episodes"]] == [0, 1, 2] for v in valid)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "git.txt").is_file()
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 4000


def test_killed_run_resumes_at_the_saved_step_and_ends_identical(launch_here, tmp_path):
    """Killed in its own process; the uninterrupted run and the resume run in this one (the same numbers)."""
    whole = launch_here(*TINY, f"run_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr

    run = tmp_path / "killed"
    saved = kill_at_checkpoint(*TINY, f"run_dir={run}", checkpoint=run / "checkpoints" / "ckpt_0000001600.pt")
    assert saved and saved[-1] < 4000, saved

    resumed = launch_here(*TINY, f"run_dir={run}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {saved[-1]}" in resumed.stderr
    steps_a, weights_a = _final_weights(tmp_path / "whole")
    steps_b, weights_b = _final_weights(run)
    assert steps_a == steps_b == 4000
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    # TensorBoard: one point per step per tag, none missing after the resume
    tags = tb_scalars(run)
    for tag in ("train/lr", "valid/reward"):
        steps = [s for s, _ in tags[tag]]
        assert sorted(set(steps)) == [s for s, _ in tb_scalars(tmp_path / "whole")[tag]], (tag, steps)


def test_sigterm_saves_and_resume_finishes(launch_here, tmp_path):
    proc = stop_after_first_checkpoint(*TINY, "pipeline.stages.0.max_stage_steps=40000", f"run_dir={tmp_path}",
                                       run_dir=tmp_path)
    out = proc.stdout
    assert proc.returncode == 3, out
    assert "stopped by SIGTERM" in out and "resume=true" in out
    stopped_at = max(int(p.stem.split("_")[1]) for p in (tmp_path / "checkpoints").glob("ckpt_*.pt"))
    assert stopped_at % 400 == 0 and stopped_at < 40000
    resumed = launch_here(*TINY, "pipeline.stages.0.max_stage_steps=40000", f"run_dir={tmp_path}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert _final_weights(tmp_path)[0] == 40000
    lines = (tmp_path / "valid.json").read_text()
    # the save on SIGTERM did not move the schedule: validations at the same steps as without the stop
    assert [json.loads(line)["training_steps"] for line in lines.splitlines()] == list(range(800, 40001, 800))
    again = launch_here(*TINY, "pipeline.stages.0.max_stage_steps=40000", f"run_dir={tmp_path}", "resume=true")
    assert again.returncode == 0 and "already finished at step 40000" in again.stderr, again.stderr
    assert (tmp_path / "valid.json").read_text() == lines


def test_training_runs_with_the_garbage_collector_on_the_start_up_frozen_and_a_short_omp_spin(tmp_path):
    """launch.py turns the collector off for a single run's start-up; the run itself must have it back on,
    with the start-up's objects frozen (so that no collection walks them again). It also shortens libgomp's
    spin-wait before torch loads."""
    probe = tmp_path / "gc.json"
    code = f"""
import gc, json, os, pathlib, runpy, sys
import rl_core.trainer
train = rl_core.trainer.Trainer.train
def probe(self):
    state = {{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "spin": os.environ.get("GOMP_SPINCOUNT")}}
    pathlib.Path({str(probe)!r}).write_text(json.dumps(state))
    return train(self)
rl_core.trainer.Trainer.train = probe
sys.argv = ["launch.py", *sys.argv[1:]]
runpy.run_path("launch.py", run_name="__main__")
"""
    proc = subprocess.run([sys.executable, "-c", code, "experiment=smoke", "logger=tensorboard",
                           f"run_dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=launch_env({"GOMP_SPINCOUNT": None}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads(probe.read_text())
    assert state["enabled"] is True
    assert state["frozen"] > 100_000  # torch alone makes more
    assert state["spin"] == "2000"  # set before torch loads OpenMP (docs/performance.md, "Beside other work")
    assert (tmp_path / "run" / "DONE").is_file()


def test_a_second_ctrl_c_quits_at_once_saying_what_was_saved(tmp_path):
    """Rollouts of 80,000 steps (seconds each): both SIGINTs land early in the second rollout, before its save."""
    args = [*TINY, "pipeline.num_steps=20000", "pipeline.stages.0.max_stage_steps=800000", f"run_dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # until the first checkpoint is saved and validated
        lines.append(line)
        if "valid @ 80000 steps" in line:
            break
    time.sleep(0.5)  # past the rollout boundary, where the first SIGINT would be taken as "save and stop"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert "interrupted: quit at once; the steps after ckpt_0000080000.pt (80,000 env steps) were not saved" in out
    assert f"resume=true run_dir={tmp_path}" in out
    assert [p.name for p in (tmp_path / "checkpoints").glob("ckpt_*.pt")] == ["ckpt_0000080000.pt"]
