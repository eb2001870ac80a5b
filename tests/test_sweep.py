"""Local multirun sweeps through launch.py: job dirs, the report at the end, failures, resume (tuning studies: tests/test_tune.py)."""

import json
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, WANDB_OFFLINE_ENV, launch_env, run_launch
from tests.wandb_records import read_offline_run

pytestmark = pytest.mark.slow  # end-to-end: make test, not make test-fast

# 4 samplers x 100 steps; 2000 steps; checkpoint and validation every 800 and at the end
SWEEP_TINY = ["experiment=smoke", "pipeline.stages.0.max_stage_steps=2000", "pipeline.num_steps=100",
              "pipeline.save_interval=800", "pipeline.metric_accumulate_interval=400", "pipeline.update_repeats=2"]


def _done_steps(job):
    return json.loads((job / "DONE").read_text())["total_steps"]


def test_two_seeds_by_two_learning_rates_give_four_jobs_and_a_two_group_report(launch, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch("--multirun", *SWEEP_TINY, "seed=1,2", "pipeline.optimizer.lr=1e-3,3e-4",
                  f"hydra.sweep.dir={sweep}", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seeds = set()
    for job in jobs:
        assert _done_steps(job) == 2000
        cfg = OmegaConf.load(job / "config.yaml")
        seeds.add((cfg.seed, cfg.pipeline.optimizer.lr))
    assert seeds == {(1, 1e-3), (2, 1e-3), (1, 3e-4), (2, 3e-4)}
    md = (sweep / "report.md").read_text()
    assert "| `pipeline.optimizer.lr=0.001` | 2/2 |" in md and "| `pipeline.optimizer.lr=0.0003` | 2/2 |" in md
    assert (sweep / "report_curves.png").is_file() and (sweep / "report.csv").is_file()
    assert "sweep report" in proc.stderr  # printed at the end without asking
    # the report's mean is the mean of the two jobs' final rewards
    finals = {}
    for job in jobs:
        cfg = OmegaConf.load(job / "config.yaml")
        finals.setdefault(cfg.pipeline.optimizer.lr, []).append(json.loads((job / "DONE").read_text())["reward"])
    row = next(line for line in md.splitlines() if "lr=0.001`" in line)
    assert f"{sum(finals[1e-3]) / 2:.1f} ±" in row
    again = launch("mode=report", f"sweep_dir={sweep}")
    assert again.returncode == 0, again.stderr
    assert (sweep / "report.md").read_text() == md


def test_a_failed_job_is_listed_and_the_others_still_reported(launch, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch("--multirun", *SWEEP_TINY, "seed=1", "machine.num_samplers=4,0", f"hydra.sweep.dir={sweep}",
                  "logger=tb_wandb", timeout=300, env={**WANDB_OFFLINE_ENV, "HOME": str(tmp_path)})
    assert proc.returncode != 0, "a sweep with a failed job exits non-zero"
    failed = json.loads((sweep / "1" / "FAILED").read_text())
    assert "machine.num_samplers: must be >= 1" in failed["error"]
    assert _done_steps(sweep / "0") == 2000
    md = (sweep / "report.md").read_text()
    assert "| `machine.num_samplers=4` | 1/1 |" in md
    assert "Failed or unfinished jobs" in md and "| 1 | failed |" in md and "must be >= 1" in md
    # `mode=report` exits 4 while a job failed (scripts and CI see it), and logs the report to the sweep's W&B
    # group as a run of its own, with the table
    again = launch("mode=report", f"sweep_dir={sweep}", "logger=wandb",
                   env={**WANDB_OFFLINE_ENV, "HOME": str(tmp_path)})
    assert again.returncode == 4, again.stderr
    assert f"error: 1 job(s) of {sweep} failed (1; listed above" in again.stderr
    (report_run,) = (sweep / "wandb").glob("offline-run-*")
    rec = read_offline_run(report_run)
    assert rec["run"]["job_type"] == "report" and rec["run"]["group"] == str(sweep)
    assert any(h.get("report/table/_type") == "table-file" and h.get("report/table/nrows") == 2
               for h in rec["history"])  # media are stored under nested keys
    assert any(h.get("report/curves/_type") == "image-file" for h in rec["history"])


def test_an_interrupted_sweep_resumes_finished_jobs_skipped_and_numbering_kept(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, str(ROOT / "launch.py"), "--multirun", *SWEEP_TINY,
            "pipeline.stages.0.max_stage_steps=20000", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(args, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 240
    while not list((sweep / "1" / "checkpoints").glob("ckpt_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: save job 1 and stop the whole sweep
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out[-3000:]
    assert _done_steps(sweep / "0") == 20000 and not (sweep / "1" / "DONE").exists()
    stopped_at = json.loads((sweep / "1" / "PREEMPTED").read_text())["steps"]
    assert 0 < stopped_at < 20000
    valid_0 = (sweep / "0" / "valid.json").read_text()

    resumed = subprocess.run(args + ["resume=true"], cwd=ROOT, env=launch_env(), capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already finished at step 20000" in resumed.stderr
    assert f"at step {stopped_at}" in resumed.stderr
    assert (sweep / "0" / "valid.json").read_text() == valid_0  # the finished job was not run again
    assert _done_steps(sweep / "1") == 20000
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    assert "| `(all jobs)` | 2/2 |" in (sweep / "report.md").read_text()


def test_submitit_local_runs_the_same_sweep(tmp_path):
    """submitit's local executor (no cluster): the same sweep, the same report."""
    sweep = tmp_path / "sweep"
    proc = run_launch("--multirun", "hydra/launcher=submitit_local", *SWEEP_TINY, "seed=1,2",
                      f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "DONE").read_text())["total_steps"] == 2000
    assert "| `(all jobs)` | 2/2 |" in (sweep / "report.md").read_text()
