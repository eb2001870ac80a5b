"""Bad input through launch.py: one line naming the problem, no traceback, a non-zero exit."""

import pytest
import torch

SMOKE = ["experiment=smoke"]


def _assert_one_line_error(proc, *fragments):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for f in fragments:
        assert f in out, out


@pytest.mark.parametrize("args,fragments", [
    (["env=lunar"], ["Could not find 'env/lunar'", "lunar_lander_continuous"]),
    (["pipeline.nm_steps=5"], ["Key 'nm_steps' is not in struct"]),
    (["+model.hiden_sizes=[64]"], ["model.hiden_sizes: unknown key", "did you mean 'hidden_sizes'"]),
    (["pipeline.num_steps=ten"], ["pipeline.num_steps: expected int, got 'ten'"]),
    (["pipeline.num_mini_batch=9"], ["pipeline.stages[0]: num_mini_batch=9 exceeds machine.num_samplers=4"]),
    (["pipeline.stages.0.loss_names=[a2c]"], ["pipeline.stages[0].loss_names: unknown loss ['a2c']"]),
    (["pipeline.save_interval=0"], ["pipeline.save_interval: must be > 0, got 0"]),
    (["pipeline.stages.0.max_stage_steps=-5"], ["max_stage_steps: must be > 0, got -5"]),
    (["env.env_id=LunarLandrContinuous-v3"], ["env.env_id: gymnasium does not know", "LunarLanderContinuous-v3"]),
    (["env.env_id=LunarLander-v3"], ["env.env_id: LunarLander-v3 has action space Discrete(4)", "continuous (Box)"]),
    (["mode=play"], ["mode: must be one of train"]),
    (["logger=tb_wandb", "logger.wandb.mode=sometimes"], ["logger.wandb.mode: must be one of auto, online"]),
    (["pipeline.stop_at_valid_reward=high"], ["pipeline.stop_at_valid_reward: expected float | None, got 'high'"]),
    (["solved_reward=abc"], ["solved_reward: expected a number, got 'abc'"]),
])
def test_bad_config(launch, tmp_path, args, fragments):
    _assert_one_line_error(launch(*SMOKE, f"run_dir={tmp_path}", *args), *fragments)


def test_resume_with_nothing_to_resume(launch, tmp_path):
    _assert_one_line_error(launch(*SMOKE, f"run_dir={tmp_path}", "resume=true"),
                           "resume=true but", "holds no config.yaml")


def test_corrupted_checkpoint_is_named_and_left_alone(launch, tmp_path):
    run = launch(*SMOKE, f"run_dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    newest = sorted((tmp_path / "checkpoints").glob("ckpt_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    before = newest.read_bytes()
    _assert_one_line_error(launch(*SMOKE, f"run_dir={tmp_path}", "resume=true"),
                           f"checkpoint {newest} is corrupted")
    assert newest.read_bytes() == before


def test_checkpoint_with_another_model_shape_names_the_parameter(launch, tmp_path):
    run = launch(*SMOKE, f"run_dir={tmp_path / 'a'}")
    assert run.returncode == 0, run.stderr
    ckpt = sorted((tmp_path / "a" / "checkpoints").glob("ckpt_*.pt"))[-1]
    assert torch.load(ckpt, weights_only=True)["state"]["total_steps"] == 1600
    _assert_one_line_error(launch(*SMOKE, f"run_dir={tmp_path / 'b'}", f"checkpoint={ckpt}", "model.hidden_sizes=[16]"),
                           "parameter actor.0.weight has shape (64, 8) in the checkpoint but (16, 8)")


def test_report_of_a_folder_without_jobs(launch, tmp_path):
    _assert_one_line_error(launch("mode=report", f"sweep_dir={tmp_path / 'empty'}"),
                           "sweep_dir:", "holds no jobs of a multirun")
