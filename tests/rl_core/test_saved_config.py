"""Configs read back from a run folder or a checkpoint: old ``_target_`` names map to the new modules, and
nothing but trusted classes is ever built from such a file (crafted configs, corrupted files)."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from envs.factory import GymTaskFactory
from rl_core.saved_config import upgrade_targets
from tests.test_train import TINY

# The targets a run's config.yaml named before rl_core/ and envs/ were split into subpackages.
OLD_NAMES = {
    "envs.factory.GymTaskFactory": "envs.tasks.GymTaskFactory",
    "rl_core.algo.ppo.PPO": "rl_core.ppo.PPOLoss",
    "rl_core.algo.pipeline.TrainingPipeline": "rl_core.pipeline.TrainingPipeline",
    "rl_core.algo.pipeline.PipelineStage": "rl_core.pipeline.PipelineStage",
    "rl_core.algo.schedules.EnvStepLR": "rl_core.schedules.EnvStepLR",
    "rl_core.algo.schedules.LinearDecay": "rl_core.schedules.LinearDecay",
    "rl_core.tracking.loggers.TensorBoardLogger": "rl_core.loggers.TensorBoardLogger",
    "rl_core.eval.selection.TestSelection": "rl_core.selection.TestSelection",
}


def _to_old_names(text: str) -> str:
    for new, old in OLD_NAMES.items():
        text = text.replace(f"_target_: {new}\n", f"_target_: {old}\n")
    return text


def test_old_targets_map_to_the_new_modules():
    old = OmegaConf.create({
        "env": {"_target_": "envs.tasks.EnvPoolTaskFactory"},
        "pipeline": {"_target_": "rl_core.pipeline.TrainingPipeline",
                     "stages": [{"_target_": "rl_core.pipeline.PipelineStage"}],
                     "lr_scheduler": {"_target_": "rl_core.schedules.EnvStepLR",
                                      "lr_lambda": {"_target_": "rl_core.schedules.LinearDecay"}}},
        "logger": {"_target_": "rl_core.loggers.LoggerSet", "wandb": {"_target_": "rl_core.loggers.WandbLogger"}},
        "machine": {"_target_": "rl_core.machine.Machine"},
    })
    new = upgrade_targets(old, "config.yaml")
    assert new.env._target_ == "envs.envpool_backend.EnvPoolTaskFactory"
    assert new.pipeline.stages[0]._target_ == "rl_core.algo.pipeline.PipelineStage"
    assert new.pipeline.lr_scheduler.lr_lambda._target_ == "rl_core.algo.schedules.LinearDecay"
    assert new.logger.wandb._target_ == "rl_core.tracking.loggers.WandbLogger"
    assert new.machine._target_ == "rl_core.machine.Machine"  # never moved


@pytest.mark.slow
def test_a_run_saved_before_the_move_tests_and_resumes(launch_here, tmp_path):
    run = tmp_path / "run"
    assert launch_here(*TINY, f"run_dir={run}").returncode == 0
    config = run / "config.yaml"
    config.write_text(_to_old_names(config.read_text()))
    assert "rl_core.ppo.PPOLoss" in config.read_text() and "rl_core.algo" not in config.read_text()
    # the newest checkpoint as a kill before the end leaves it, its saved config with the old names too
    (run / "DONE").unlink()
    ckpts = sorted((run / "checkpoints").glob("ckpt_*.pt"))
    for late in ckpts[-2:]:
        late.unlink()
    state = torch.load(ckpts[-3], weights_only=True)
    state["config"] = OmegaConf.to_container(OmegaConf.create(_to_old_names(OmegaConf.to_yaml(state["config"]))))
    torch.save(state, ckpts[-3])

    tested = launch_here("mode=test", f"checkpoint={ckpts[-3]}", "test.video=false")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "loading them from where they are now" in tested.stderr
    resumed = launch_here(*TINY, f"run_dir={run}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "DONE").read_text())["total_steps"] == 4000
    config.unlink()  # test mode then reads the config saved in the checkpoint
    tested = launch_here("mode=test", f"checkpoint={ckpts[-3]}", "test.video=false")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert f"{ckpts[-3]} names classes by their old module paths" in tested.stderr


class UserFactory(GymTaskFactory):
    """A user's own env class, trusted only when the command line says so."""


def _trained(launch_here, run):
    assert launch_here("experiment=smoke", f"run_dir={run}").returncode == 0
    return sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]


def _craft(cfg: dict, probe) -> dict:
    """The run's config with its env replaced by a call that would create ``probe`` if anything built it."""
    return {**cfg, "env": {"_target_": "builtins.open", "_args_": [str(probe), "w"]}}


@pytest.mark.parametrize("where", ["config.yaml", "checkpoint"])
def test_a_crafted_config_is_refused_before_anything_is_built(launch_here, tmp_path, where):
    run, probe = tmp_path / "run", tmp_path / "probe.txt"
    ckpt = _trained(launch_here, run)
    if where == "config.yaml":
        crafted = _craft(OmegaConf.to_container(OmegaConf.load(run / "config.yaml")), probe)
        (run / "config.yaml").write_text(OmegaConf.to_yaml(crafted))
        args = [f"run_dir={run}"]
    else:
        state = torch.load(ckpt, weights_only=True)
        state["config"] = _craft(state["config"], probe)
        torch.save(state, ckpt)
        (run / "config.yaml").unlink()
        args = [f"checkpoint={ckpt}"]
    proc = launch_here("mode=test", *args, "test.video=false")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "env._target_:" in proc.stderr and "asks to build 'builtins.open'" in proc.stderr
    assert not probe.exists()
    if where == "config.yaml":
        resumed = launch_here("experiment=smoke", f"run_dir={run}", "resume=true")
        assert resumed.returncode == 2 and "asks to build 'builtins.open'" in resumed.stderr
        assert not probe.exists()


@pytest.mark.parametrize("env,fragment", [
    ({"_target_": "rl_core.tracking.provenance.save_provenance"}, "asks to build 'rl_core.tracking.provenance.save_provenance'"),
    ({"_target_": "envs.factory.GymTaskFactory", "env_id": "evil_module:Lander-v0"}, "imports module 'evil_module'"),
])
def test_project_functions_and_env_modules_are_not_trusted_by_the_file(launch_here, tmp_path, env, fragment):
    run = tmp_path / "run"
    _trained(launch_here, run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.env = env
    OmegaConf.save(cfg, run / "config.yaml")
    proc = launch_here("mode=test", f"run_dir={run}", "test.video=false")
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr[-3000:]


def test_a_users_own_class_loads_once_the_command_line_trusts_it(launch_here, tmp_path):
    run = tmp_path / "run"
    _trained(launch_here, run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.env._target_ = f"{__name__}.UserFactory"
    OmegaConf.save(cfg, run / "config.yaml")
    refused = launch_here("mode=test", f"run_dir={run}", "test.video=false")
    assert refused.returncode == 2 and "trusted_targets=[PREFIX]" in refused.stderr
    trusted = launch_here("mode=test", f"run_dir={run}", "test.video=false", "trusted_targets=[tests.]")
    assert trusted.returncode == 0, trusted.stderr[-3000:]


@pytest.mark.parametrize("text,fragment", [
    ("env: [unclosed\n", "line "),
    ("- just\n- a list\n", "not the config of a training run"),
    ("seed: 1\nenv: {}\n", "not the config of a training run (no model, algo"),
])
def test_a_corrupted_config_yaml_is_named_in_one_line(launch_here, tmp_path, text, fragment):
    run = tmp_path / "run"
    _trained(launch_here, run)
    (run / "config.yaml").write_text(text)
    for args in (["mode=test", f"run_dir={run}"], ["experiment=smoke", f"run_dir={run}", "resume=true"]):
        proc = launch_here(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert f"{run / 'config.yaml'}:" in proc.stderr and fragment in proc.stderr, proc.stderr[-2000:]
