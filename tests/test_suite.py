"""The continuous-control suite: a MuJoCo recipe trains, resumes bit-identically with its normalisers, tests
from its checkpoint alone as it validated, films; any Box env by id, a user's own env, the action handling."""

import ctypes.util
import json
import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from envs.factory import GymTaskFactory
from envs.task import action_transform
from tests.conftest import ROOT, kill_at_checkpoint, launch_env, run_launch

# HalfCheetah with the MuJoCo recipe, tiny: 2 samplers x 64 steps = 128 env steps a rollout, 8 rollouts,
# a checkpoint every 2; shuffled minibatches of 32, obs normalisation and reward scaling on.
TINY_MUJOCO = ["env=half_cheetah", "experiment=mujoco_ppo", "machine.num_samplers=2", "pipeline.num_steps=64",
               "pipeline.stages.0.max_stage_steps=1024", "pipeline.save_interval=256", "pipeline.minibatch_size=32",
               "pipeline.update_repeats=2", "pipeline.metric_accumulate_interval=256",
               "env.heldout_episodes_per_sampler=2"]


# `make test` installs Mesa's EGL as root (scripts/gl_libs.sh); elsewhere, without it, the video part is skipped
HAS_EGL = ctypes.util.find_library("EGL") is not None or os.geteuid() == 0


def _ckpt(run_dir, steps=None):
    files = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    return torch.load(files[-1] if steps is None else run_dir / "checkpoints" / f"ckpt_{steps:010d}.pt",
                      weights_only=True)


@pytest.mark.slow
def test_mujoco_recipe_resumes_bit_identically_with_its_normalisers_and_tests_as_it_validated(launch_here, tmp_path):
    # every training in a process of its own, as a user runs them: in the full suite, state left in the pytest
    # process by earlier in-process runs changed the float rounding of an in-process part (never when alone)
    # one validation and test episode of 1,000 steps, two checkpoints: the same checks at half the time
    args = [*TINY_MUJOCO, "env.valid_episodes_per_sampler=1", "env.test_episodes_per_sampler=1",
            "pipeline.save_interval=512"]
    whole = run_launch(*args, f"run_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    a = _ckpt(tmp_path / "whole")
    assert a["state"]["total_steps"] == 1024
    assert "obs_norm.stats.mean" in a["model"] and a["model"]["obs_norm.stats.count"] > 1000  # 1024 obs seen
    assert a["reward_scaler"]["stats"]["count"] > 1000 and a["reward_scaler"]["returns"].shape == (2,)

    run = tmp_path / "killed"
    saved = kill_at_checkpoint(*args, f"run_dir={run}", checkpoint=run / "checkpoints" / "ckpt_0000000512.pt")
    assert saved and saved[-1] < 1024, saved
    resumed = run_launch(*args, f"run_dir={run}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    b = _ckpt(run)
    for name in a["model"]:  # weights and the observation statistics
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in ("mean", "var", "count"):
        assert torch.equal(a["reward_scaler"]["stats"][name], b["reward_scaler"]["stats"][name]), name
    assert torch.equal(a["reward_scaler"]["returns"], b["reward_scaler"]["returns"])

    # test mode builds the policy from the checkpoint alone: its test episodes (the valid seeds, as in the
    # reference) score exactly what training validated, so the statistics were saved and frozen
    tested = launch_here("mode=test", f"run_dir={tmp_path / 'whole'}", "test.video_max_frames=40")
    assert tested.returncode == 0, tested.stderr[-3000:]
    result = json.loads(next((tmp_path / "whole" / "test").glob("*/test.json")).read_text())[-1]
    assert result["training_steps"] == 1024
    final_valid = json.loads((tmp_path / "whole" / "valid.json").read_text().splitlines()[-1])
    assert [e["reward"] for e in result["episodes"]] == [e["reward"] for e in final_valid["episodes"]]
    if not HAS_EGL:
        pytest.skip("no EGL library for MuJoCo's video (scripts/gl_libs.sh installs it)")
    frames = np.stack(imageio.mimread(result["video"], memtest=False))
    assert frames.shape[0] == result["video_frames"] == 40 and frames.shape[-1] == 3 and frames.std() > 1


@pytest.mark.slow
def test_without_a_gl_backend_test_mode_warns_once_and_writes_no_video(launch_here, tmp_path):
    run = launch_here(*TINY_MUJOCO, "pipeline.stages.0.max_stage_steps=256", f"run_dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "mode=test", f"run_dir={tmp_path}"], cwd=ROOT,
                          env=launch_env({"MUJOCO_GL": "disable"}), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("no videos: HalfCheetah-v5 cannot render on this machine") == 1
    results = json.loads(next(tmp_path.glob("test/*/test.json")).read_text())
    assert results and all("video" not in r and r["num_tasks_evaled"] == 3 for r in results)
    assert not list(tmp_path.glob("test/*/*.mp4"))


@pytest.mark.slow
@pytest.mark.parametrize("env", ["pendulum", "bipedal_walker_envpool", "half_cheetah_envpool"])
def test_other_presets_train_through_launch(launch_here, tmp_path, env):
    proc = launch_here(f"env={env}", "experiment=smoke", f"run_dir={tmp_path}", "pipeline.minibatch_size=100",
                       "model.normalize_obs=true", "pipeline.reward_scaling=true", "env.valid_episodes_per_sampler=1",
                       "env.heldout_episodes_per_sampler=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    valid = [json.loads(line) for line in (tmp_path / "valid.json").read_text().splitlines()]
    assert [v["training_steps"] for v in valid] == [800, 1600] and "heldout" in valid[-1]


def test_a_users_own_env_trains_by_module_and_id(launch_here, tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "my_envs_for_test.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyPendulum-v0', entry_point='gymnasium.envs.classic_control:PendulumEnv', max_episode_steps=50)\n")
    monkeypatch.syspath_prepend(str(pkg))
    proc = launch_here("experiment=smoke", f"run_dir={tmp_path / 'run'}", "env.env_id=my_envs_for_test:MyPendulum-v0",
                       "pipeline.stages.0.max_stage_steps=800", "env.heldout_episodes_per_sampler=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (valid,) = [json.loads(line) for line in (tmp_path / "run" / "valid.json").read_text().splitlines()]
    assert [e["ep_length"] for e in valid["episodes"]] == [50, 50, 50]  # its own time limit


def test_actions_are_clipped_or_rescaled_to_the_bounds_and_stored_raw():
    factory = GymTaskFactory("Pendulum-v1", action_handling="rescale")  # torque bounds +-2
    rescale = action_transform(factory.action_space, "rescale")
    clip = action_transform(factory.action_space, "clip")
    a = np.array([[-1.0], [0.0], [0.5], [1.0], [3.0]], np.float32)
    assert rescale(a)[:, 0].tolist() == [-2.0, 0.0, 1.0, 2.0, 2.0]
    assert clip(a)[:, 0].tolist() == [-1.0, 0.0, 0.5, 1.0, 2.0]
    assert action_transform(factory.action_space, "none")(a) is a
    # the sampler steps the env with the transform and keeps the policy's own action for the replay
    sampler = factory.make("train", 0, run_seed=0)
    sampler.reset()
    sampler.step(np.array([5.0], np.float32))
    assert sampler.actions[-1].tolist() == [5.0] and sampler.env.unwrapped.last_u == 2.0
    humanoid = GymTaskFactory("Humanoid-v5")
    assert humanoid.action_space.high.max() == pytest.approx(0.4)
    assert action_transform(humanoid.action_space, "clip")(np.ones(17, np.float32)).max() == pytest.approx(0.4)
