"""The experiment presets compose, and the fast preset trains through launch.py (tiny step counts)."""

import json
import math

import pytest
from omegaconf import OmegaConf

from tests.conftest import tb_scalars

pytestmark = pytest.mark.slow  # end-to-end: make test, not make test-fast


def test_fast_preset_trains_with_its_own_schedule(launch_here, tmp_path):
    proc = launch_here("experiment=lunar_lander_fast", f"run_dir={tmp_path}", "pipeline.stages.0.max_stage_steps=8192",
                       "pipeline.save_interval=4096")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = OmegaConf.load(tmp_path / "config.yaml")
    rollout = cfg.pipeline.num_steps * cfg.machine.num_samplers
    assert rollout == 4096 and cfg.pipeline.update_repeats == 40
    steps = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "checkpoints").glob("ckpt_*.pt"))
    assert steps[-1] == json.loads((tmp_path / "DONE").read_text())["total_steps"] >= 8192
    assert all(s % rollout == 0 for s in steps)
    # the preset's action std reaches the policy: the logged entropy is ½·ln(2πe·σ²) per dimension, σ = 0.9
    entropy = [v for _, v in tb_scalars(tmp_path)["train/ppo_loss/entropy"]]
    assert entropy and all(abs(v - 0.5 * math.log(2 * math.pi * math.e * 0.9 ** 2)) < 1e-4 for v in entropy)


def test_stop_at_valid_reward_ends_the_run_at_the_first_validation_reaching_it(launch_here, tmp_path):
    proc = launch_here("experiment=smoke", f"run_dir={tmp_path}", "pipeline.stop_at_valid_reward=-10000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    valid = [json.loads(line) for line in (tmp_path / "valid.json").read_text().splitlines()]
    assert [v["training_steps"] for v in valid] == [800]  # smoke runs 1600 steps, validating every 800
    assert valid[0]["wall_s"] > 0
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 800


def test_confirm_on_heldout_plays_the_heldout_episodes_before_stopping(launch_here, tmp_path):
    proc = launch_here("experiment=smoke", f"run_dir={tmp_path}", "pipeline.stop_at_valid_reward=-10000",
                       "pipeline.confirm_on_heldout=true", "env.heldout_episodes_per_sampler=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (valid,) = [json.loads(line) for line in (tmp_path / "valid.json").read_text().splitlines()]
    assert valid["training_steps"] == 800 and valid["heldout"]["num_tasks_evaled"] == 4
    assert valid["heldout"]["wall_s"] >= valid["wall_s"]
    assert [s for s, _ in tb_scalars(tmp_path)["heldout/reward"]] == [800]
    assert "reached stop_at_valid_reward=-10000 at step 800 (held-out episodes too): stopping" in proc.stderr
    refused = launch_here("experiment=smoke", f"run_dir={tmp_path / 'b'}", "pipeline.confirm_on_heldout=true")
    assert refused.returncode == 2 and "pipeline.confirm_on_heldout: needs stop_at_valid_reward" in refused.stderr


@pytest.mark.parametrize("solved, checks, played", [(-10000, "true", [400, 1600]), (10000, "true", [1600]),
                                                     (-10000, "false", [])])
def test_heldout_checks_play_the_first_checkpoint_reaching_solved_reward_and_the_final_one(
        launch_here, tmp_path, solved, checks, played):
    proc = launch_here("experiment=smoke", f"run_dir={tmp_path}", f"solved_reward={solved}",
                       f"pipeline.heldout_checks={checks}", "pipeline.save_interval=400")
    assert proc.returncode == 0, proc.stderr[-3000:]
    valid = [json.loads(line) for line in (tmp_path / "valid.json").read_text().splitlines()]
    assert [v["training_steps"] for v in valid] == [400, 800, 1200, 1600]
    # -10000: every validation reaches it, only the first (400) plays; 10000: none does; the last always
    assert [v["training_steps"] for v in valid if "heldout" in v] == played
    assert all(v["heldout"]["num_tasks_evaled"] == 4 for v in valid if "heldout" in v)


def test_gsde_resumes_bit_identically_after_a_sigkill(tmp_path):
    """mountain_car_ppo with gSDE (8-step rollouts, new noise matrices each): killed at its first checkpoint and
    resumed, it ends with the weights, the learned noise scales σ [L, A] and the normalisers of the run that was
    never stopped."""
    import torch

    from tests.conftest import kill_at_checkpoint, run_launch

    args = ["env=mountain_car_continuous", "experiment=mountain_car_ppo", "model.use_sde=true",
            "pipeline.stages.0.max_stage_steps=512", "pipeline.save_interval=128",
            "pipeline.metric_accumulate_interval=128", "env.valid_episodes_per_sampler=1",
            "pipeline.heldout_checks=false", "+env.env_kwargs.max_episode_steps=100",
            "pipeline.stop_at_valid_reward=null"]
    whole = run_launch(*args, f"run_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    saved = kill_at_checkpoint(*args, f"run_dir={run}", checkpoint=run / "checkpoints" / "ckpt_0000000128.pt")
    assert saved and saved[-1] < 512, saved
    resumed = run_launch(*args, f"run_dir={run}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(d / "checkpoints" / "ckpt_0000000512.pt", weights_only=True)["model"]
            for d in (tmp_path / "whole", run))
    assert a["log_std"].shape == (64, 1) and not torch.equal(a["log_std"], torch.full((64, 1), a["log_std"][0, 0]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
