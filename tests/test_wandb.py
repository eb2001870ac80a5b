"""W&B through launch.py, offline (no account needed): what the run recorded, resume, trouble."""

import json

import pytest

from tests.conftest import WANDB_OFFLINE_ENV, run_launch, stop_after_first_checkpoint
from tests.test_train import TINY
from tests.wandb_records import read_offline_run

pytestmark = pytest.mark.slow  # end-to-end: make test, not make test-fast


def _env(tmp_path):
    return {**WANDB_OFFLINE_ENV, "HOME": str(tmp_path / "home")}


def _offline_runs(job_dir):
    return sorted((job_dir / "wandb").glob("offline-run-*"))


def test_offline_run_records_metrics_against_env_steps_and_the_resolved_config(launch, tmp_path):
    run = tmp_path / "run"
    proc = launch(*TINY, f"run_dir={run}", "logger=tb_wandb", "seed=7", "logger.wandb.log_model=true",
                  env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "recording offline" in proc.stderr and "wandb sync" in proc.stderr
    (offline,) = _offline_runs(run)
    rec = read_offline_run(offline)
    saved = json.loads((run / "wandb_run.json").read_text())
    assert rec["run"]["id"] == saved["id"] and rec["run"]["job_type"] == "train"
    assert rec["run"]["tags"] == ["LunarLanderContinuous-v2"]
    assert rec["exit_code"] == 0
    # the resolved config: interpolations are values, every group is there
    assert rec["config"]["seed"] == 7
    assert rec["config"]["pipeline"]["num_steps"] == 100
    assert rec["config"]["machine"]["num_samplers"] == 4
    assert "${" not in json.dumps(rec["config"])
    history = rec["history"]
    keys = set().union(*history)
    for key in ("env_steps", "train/reward", "train/lr", "train/ppo_loss/value", "valid/reward", "valid/success"):
        assert key in keys, sorted(keys)
    # every point carries its env step; the valid points are at the checkpoints, as in TensorBoard
    assert all("env_steps" in h for h in history)
    assert [h["env_steps"] for h in history if "valid/reward" in h] == [800, 1600, 2400, 3200, 4000]
    assert (run / "tb").is_dir()  # TensorBoard still written beside W&B
    # the final checkpoint as a model artifact
    (artifact,) = rec["artifacts"]
    assert artifact["type"] == "model" and artifact["files"] == ["ckpt_0000004000.pt"]

    # test mode: a W&B run of its own (job_type test) with the clip as a W&B video
    tested = launch("mode=test", f"run_dir={run}", "test.select=steps", "test.steps=[4000]", "logger=wandb",
                    env=_env(tmp_path))
    assert tested.returncode == 0, tested.stderr
    (test_dir,) = (run / "test").iterdir()
    test_rec = read_offline_run(_offline_runs(test_dir)[0])
    assert test_rec["run"]["job_type"] == "test"
    (video,) = [h for h in test_rec["history"] if "test/episode_vid/_type" in h]  # media: nested keys
    assert video["env_steps"] == 4000 and video["test/episode_vid/_type"] == "video-file"
    assert any(h.get("test/reward") is not None for h in test_rec["history"])


def test_resumed_job_continues_the_same_wandb_run(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "pipeline.stages.0.max_stage_steps=40000", f"run_dir={run}", "logger=wandb"]
    proc = stop_after_first_checkpoint(*args, run_dir=run, env=_env(tmp_path))
    assert proc.returncode == 3, proc.stdout
    first_id = json.loads((run / "wandb_run.json").read_text())["id"]
    stopped = read_offline_run(_offline_runs(run)[0])
    assert stopped["preempting"], "a stop on a signal marks the W&B run as preempting"
    stopped_at = max(h["env_steps"] for h in stopped["history"])

    resumed = run_launch(*args, "resume=true", env=_env(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    runs = _offline_runs(run)
    assert len(runs) == 2
    ids = {read_offline_run(r)["run"]["id"] for r in runs}
    assert ids == {first_id}, "one W&B run id for the whole job"
    assert json.loads((run / "wandb_run.json").read_text())["id"] == first_id
    # the continued run logs from after the stop: no env step twice across both parts, none missing
    second = read_offline_run(runs[1])
    train_steps = [h["env_steps"] for part in (stopped, second) for h in part["history"] if "train/lr" in h]
    valid_steps = [h["env_steps"] for part in (stopped, second) for h in part["history"] if "valid/reward" in h]
    assert valid_steps == list(range(800, 40001, 800))
    assert min(h["env_steps"] for h in second["history"]) >= stopped_at
    assert train_steps == list(range(400, 40001, 400))


def test_wandb_trouble_warns_once_and_training_goes_on(launch, tmp_path):
    # an API key but no W&B server: the online start fails at once (not after init_timeout_s: 1 hour here),
    # with one warning, and the run is recorded offline instead
    env = {**_env(tmp_path), "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    proc = launch(*TINY, f"run_dir={tmp_path / 'run'}", "logger=tb_wandb", "logger.wandb.mode=online",
                  "logger.wandb.init_timeout_s=3600", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("W&B online start failed") == 1
    assert "[WARNING] W&B online start failed (server http://127.0.0.1:9 unreachable)" in proc.stderr
    assert json.loads((tmp_path / "run" / "DONE").read_text())["total_steps"] == 4000
    (offline,) = _offline_runs(tmp_path / "run")
    assert any("valid/reward" in h for h in read_offline_run(offline)["history"])
