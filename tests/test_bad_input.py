"""Bad input through launch.py: one line naming the problem, no traceback, a non-zero exit.

Most cases run launch.py's main in this process (the same checks, messages and exit codes); one runs it as
a user does, in a new process, to hold the process-level contract."""

import errno
import json
import subprocess

import pytest
import torch

from rl_core import checkpoint

SMOKE = ["experiment=smoke"]


def _assert_one_line_error(proc, *fragments):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for f in fragments:
        assert f in out, out


@pytest.mark.parametrize("args,fragments", [
    (["env=lunar"], ["env=lunar: no such option in conf/env/; did you mean lunar_lander_continuous or "
                      "lunar_lander_continuous_envpool?"]),
    (["algo=sack"], ["algo=sack: no such option in conf/algo/; did you mean sac?"]),
    (["pipeline.nm_steps=5"], ["pipeline.nm_steps: unknown key; did you mean 'num_steps'?"]),
    (["hydra.job.chdr=true"], ["hydra.job.chdr: unknown key; did you mean 'chdir'?"]),
    (["+model.hiden_sizes=[64]"], ["model.hiden_sizes: unknown key", "did you mean 'hidden_sizes'"]),
    (["pipeline.num_steps=ten"], ["pipeline.num_steps: expected int, got 'ten'"]),
    (["pipeline.num_mini_batch=9"], ["pipeline.stages[0]: num_mini_batch=9 exceeds machine.num_samplers=4"]),
    (["pipeline.stages.0.loss_names=[a2c]"], ["pipeline.stages[0].loss_names: unknown loss ['a2c']"]),
    (["pipeline.save_interval=0"], ["pipeline.save_interval: must be > 0, got 0"]),
    (["pipeline.stages.0.max_stage_steps=-5"], ["pipeline.stages[0].max_stage_steps: must be > 0, got -5"]),
    (["pipeline.optimizer.lr=-1e-3"], ["pipeline.optimizer: Invalid learning rate: -0.001"]),
    (["checkpoint=/tmp"], ["checkpoint /tmp is a folder; give one file from a run's checkpoints/"]),
    (["trusted_targets=[1]"], ["trusted_targets: expected a list of module prefixes"]),
    (["machine.worker_timeout_s=0"], ["machine.worker_timeout_s: must be > 0, got 0"]),
    (["env.env_id=LunarLandrContinuous-v3"], ["env.env_id: gymnasium does not know", "LunarLanderContinuous-v3"]),
    (["env.env_id=LunarLander-v3"], ["env.env_id: LunarLander-v3 has action space Discrete(4)", "continuous (Box)"]),
    (["mode=play"], ["mode: must be one of train"]),
    (["logger=tb_wandb", "logger.wandb.mode=sometimes"], ["logger.wandb.mode: must be one of auto, online"]),
    (["pipeline.stop_at_valid_reward=high"], ["pipeline.stop_at_valid_reward: expected float | None, got 'high'"]),
    (["solved_reward=abc"], ["solved_reward: expected a number or null, got 'abc'"]),
    (["env.env_id=CarRacing-v3"], ["env.env_id: CarRacing-v3 has observation space Box(0, 255, (96, 96, 3)", "flat Box"]),
    (["env.env_id=nosuchpkg:MyEnv-v0"], ["env.env_id: cannot import 'nosuchpkg' for 'nosuchpkg:MyEnv-v0'"]),
    (["env.action_handling=squash"], ["env.action_handling: must be one of ('none', 'clip', 'rescale'), got 'squash'"]),
    (["+env.env_kwargs.gravity_x=1"], ["env.env_kwargs: LunarLanderContinuous-v3:", "gravity_x"]),
    (["model.activation=gelu"], ["model.activation: must be one of ('tanh', 'relu'), got 'gelu'"]),
    (["model.obs_clip=0"], ["model.obs_clip: must be > 0, got 0"]),
    (["model.use_sde=true", "model.sde_sample_freq=0"], ["model.sde_sample_freq: must be -1 (once per rollout) or >= 1"]),
    (["machine.fused_update=true", "model.use_sde=true"],
     ["machine.fused_update=true: model.use_sde=true (gSDE) has no fused update; set machine.fused_update=false"]),
    (["machine.fused_update=true", "machine.compile=true"], ["machine.fused_update: writes its own backward"]),
    (["pipeline.minibatch_size=0"], ["pipeline.minibatch_size: must be >= 1, got 0 (stages[0])"]),
    (["pipeline.minibatch_size=401"], ["pipeline.stages[0]: minibatch_size=401 exceeds the rollout's num_steps x "
                                       "machine.num_samplers = 400 transitions"]),
    (["pipeline.reward_clip=0"], ["pipeline.reward_clip: must be > 0, got 0"]),
    (["machine.sync_frac=1.5"], ["machine.sync_frac: must be in (0, 1] or null, got 1.5"]),
    (["machine.sync_frac=0.6", "pipeline.minibatch_size=4"],
     ["pipeline.stages[0]: minibatch_size=4 is too small for machine.min_rollout_frac=0.25"]),
])
def test_bad_config(launch_here, tmp_path, args, fragments):
    _assert_one_line_error(launch_here(*SMOKE, f"run_dir={tmp_path}", *args), *fragments)


def test_resume_with_nothing_to_resume(launch_here, tmp_path):
    _assert_one_line_error(launch_here(*SMOKE, f"run_dir={tmp_path}", "resume=true"),
                           "resume=true but", "holds no config.yaml")


def test_corrupted_checkpoint_is_named_left_alone_and_the_way_on_given(launch_here, tmp_path):
    run = launch_here(*SMOKE, f"run_dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    (tmp_path / "DONE").unlink()  # as a run killed after its last checkpoint leaves it
    newest = sorted((tmp_path / "checkpoints").glob("ckpt_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    before = newest.read_bytes()
    proc = launch_here(*SMOKE, f"run_dir={tmp_path}", "resume=true")
    _assert_one_line_error(proc, f"checkpoint {newest} is corrupted",
                           "The newest readable checkpoint is ckpt_0000000800.pt (800 env steps)",
                           f"mv {newest} {newest}.unreadable")
    assert newest.read_bytes() == before
    newest.rename(f"{newest}.unreadable")
    resumed = launch_here(*SMOKE, f"run_dir={tmp_path}", "resume=true")
    assert resumed.returncode == 0 and "at step 800" in resumed.stderr, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 1600


def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_nothing_partial(launch_here, tmp_path, monkeypatch):
    def full_disk(path, data):
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_file", full_disk)
    proc = launch_here(*SMOKE, f"run_dir={tmp_path}")
    _assert_one_line_error(proc, f"no space left in {tmp_path / 'checkpoints'} for checkpoint ckpt_0000000800.pt (",
                           "MB needed", "MB free")
    assert proc.returncode == 2
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_temporaries_of_a_killed_checkpoint_write_are_removed_at_start(launch_here, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / "checkpoints" / f".ckpt_0000000800.pt.{dead.pid}.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    proc = launch_here(*SMOKE, f"run_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not stale.exists() and f"removed {stale}" in proc.stderr

@pytest.mark.parametrize("mode", ["train", "test"])
def test_an_empty_file_as_checkpoint_is_one_line_and_left_alone(launch_here, tmp_path, mode):
    empty = tmp_path / "ckpt.pt"
    empty.touch()
    _assert_one_line_error(launch_here(*SMOKE, f"mode={mode}", f"run_dir={tmp_path / 'run'}", f"checkpoint={empty}"),
                           f"checkpoint {empty} is empty (0 bytes)")
    assert empty.exists() and empty.stat().st_size == 0


def test_checkpoint_with_another_model_shape_names_the_parameter(launch_here, tmp_path):
    run = launch_here(*SMOKE, f"run_dir={tmp_path / 'a'}")
    assert run.returncode == 0, run.stderr
    ckpt = sorted((tmp_path / "a" / "checkpoints").glob("ckpt_*.pt"))[-1]
    assert torch.load(ckpt, weights_only=True)["state"]["total_steps"] == 1600
    _assert_one_line_error(launch_here(*SMOKE, f"run_dir={tmp_path / 'b'}", f"checkpoint={ckpt}", "model.hidden_sizes=[16]"),
                           "parameter actor.0.weight has shape (64, 8) in the checkpoint but (16, 8)")


def test_report_of_a_folder_without_jobs(launch_here, tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(launch_here("mode=report", f"sweep_dir={tmp_path / 'empty'}"),
                           "sweep_dir:", "holds no jobs of a multirun")
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("args,fragment", [
    (["mode=report", "sweep_dir={missing}"], "sweep_dir: {missing} does not exist"),
    (["mode=test", "run_dir={missing}"], "run_dir: {missing} does not exist"),
    (["mode=test", "checkpoint={missing}/checkpoints/ckpt_0000000800.pt"], "does not exist"),
])
def test_a_mistyped_folder_is_named_and_not_created(launch_here, tmp_path, args, fragment):
    missing = tmp_path / "typo"
    _assert_one_line_error(launch_here(*(a.format(missing=missing) for a in args)), fragment.format(missing=missing))
    assert not missing.exists()



@pytest.mark.slow
@pytest.mark.parametrize("args,fragments,code", [
    (["env=lunar"], ["env=lunar: no such option in conf/env/; did you mean lunar_lander_continuous"], 2),
    (["pipeline.num_steps=ten"], ["pipeline.num_steps: expected int, got 'ten'"], 2),
])
def test_bad_config_in_a_new_process(launch, tmp_path, args, fragments, code):
    proc = launch(*SMOKE, f"run_dir={tmp_path}", *args)
    _assert_one_line_error(proc, *fragments)
    assert proc.returncode == code


def test_a_buffer_no_longer_than_a_step_is_refused_with_next_obs_by_index(launch_here, tmp_path):
    proc = launch_here("algo=sac", "env=pendulum", "algo.optimize_memory_usage=true", "machine.num_samplers=4",
                       "algo.buffer_size=3", f"run_dir={tmp_path / 'run'}")
    _assert_one_line_error(proc, "algo.buffer_size: must exceed machine.num_samplers (4) with algo.optimize_memory_usage=true")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_keeps_the_runs_sampler_count_whatever_the_command_composes(launch_here, tmp_path):
    """Each sampler's episode stream is in the checkpoint: a resume composed with another machine (the default's
    8 samplers for a run of 4, as resuming a preset run without its preset does) continues with the saved 4."""
    assert launch_here(*SMOKE, f"run_dir={tmp_path}").returncode == 0
    (tmp_path / "DONE").unlink()
    sorted((tmp_path / "checkpoints").glob("ckpt_*.pt"))[-1].unlink()
    proc = launch_here(*SMOKE, f"run_dir={tmp_path}", "resume=true", "machine.num_samplers=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ignoring: machine.num_samplers=8 (saved 4)" in proc.stderr
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 1600


@pytest.mark.parametrize("run_dir,fragment", [
    ("/proc/no_such_folder", "error: run_dir: cannot create /proc/no_such_folder (No such file or directory)"),
    ("/etc/hostname/run", "error: run_dir: cannot create /etc/hostname/run (Not a directory)"),
])
def test_a_run_dir_that_cannot_be_made_is_one_line(launch_here, run_dir, fragment):
    proc = launch_here(*SMOKE, f"run_dir={run_dir}")
    _assert_one_line_error(proc, fragment)
    assert proc.returncode == 2


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    from rl_core.run_config import check_yaml_files

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "good.yaml").write_text("# @package _global_\nseed: 1\n")
    assert check_yaml_files(tmp_path) is None
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\npipeline:\n  num_steps: [1,\n")
    assert check_yaml_files(tmp_path) == (f"{tmp_path / 'experiment' / 'mine.yaml'}, line 4: expected the node "
                                          "content, but found '<stream end>'")


def test_the_slurm_launcher_without_slurm_is_one_line(launch_here, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    proc = launch_here("--multirun", "hydra/launcher=submitit_slurm", *SMOKE, "seed=1",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}")
    _assert_one_line_error(proc, "hydra/launcher=submitit_slurm: this machine has no SLURM (srun and sbatch are "
                                 "not on PATH); hydra/launcher=submitit_local runs the same sweep")
    assert not (tmp_path / "sweep" / "0").exists()


@pytest.mark.parametrize("key, value, floor", [("tasks_per_node", 0, 1), ("nodes", -1, 1), ("gpus_per_node", -1, 0),
                                               ("jobs_per_task", 0, 1)])
def test_a_submitit_launcher_size_below_its_floor_is_one_line_and_starts_nothing(launch_here, tmp_path, key, value, floor):
    proc = launch_here("--multirun", "hydra/launcher=submitit_local", f"hydra.launcher.{key}={value}", *SMOKE,
                       f"hydra.sweep.dir={tmp_path / 'sweep'}")
    _assert_one_line_error(proc, f"hydra.launcher.{key}: must be >= {floor}, got {value}")
    assert not (tmp_path / "sweep").exists()


def test_packing_jobs_of_several_ranks_is_one_line_and_starts_nothing(launch_here, tmp_path):
    proc = launch_here("--multirun", "hydra/launcher=submitit_local", "hydra.launcher.jobs_per_task=2",
                       "hydra.launcher.tasks_per_node=2", *SMOKE, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    _assert_one_line_error(proc, "hydra.launcher.jobs_per_task=2 packs one-process jobs: it cannot go with "
                                 "hydra.launcher.tasks_per_node > 1")
    assert not (tmp_path / "sweep").exists()


def test_a_mistyped_launcher_key_names_the_closest_one(launch_here, tmp_path):
    proc = launch_here("--multirun", "hydra/launcher=submitit_slurm", "hydra.launcher.job_per_task=2", *SMOKE,
                       f"hydra.sweep.dir={tmp_path / 'sweep'}")
    _assert_one_line_error(proc, "hydra.launcher.job_per_task: unknown key; did you mean 'jobs_per_task'?")


@pytest.mark.slow
def test_a_non_integer_seed_in_a_sweep_fails_that_job_in_one_line_and_the_report_lists_it(launch, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch("--multirun", *SMOKE, "seed=a,2", f"hydra.sweep.dir={sweep}")
    _assert_one_line_error(proc, "a job of the sweep failed: seed: expected int, got 'a'")
    assert json.loads((sweep / "0" / "FAILED").read_text())["error"] == "ConfigError: seed: expected int, got 'a'"
    assert json.loads((sweep / "1" / "DONE").read_text())["total_steps"] == 1600
    assert "| 0 | failed | `experiment=smoke seed=a` |" in (sweep / "report.md").read_text()
