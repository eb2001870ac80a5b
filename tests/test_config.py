"""Every YAML composes, passes the start-up checks and builds its class; bad keys and types are named."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rl_core.run_config import GROUPS
from rl_core.config_check import ConfigError, check_config

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIONS = [(g, p.stem) for g in GROUPS + ["experiment"] for p in sorted((CONF / g).glob("*.yaml"))]


def _compose(overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_checks_and_builds(group, option):
    cfg = _compose([f"{group}={option}"])
    check_config(cfg, GROUPS)
    env = hydra.utils.instantiate(cfg.env)
    model = hydra.utils.instantiate(cfg.model, obs_dim=env.observation_space.shape[0],
                                    action_dim=env.action_space.shape[0])
    for g in ("algo", "pipeline", "machine", "logger"):
        assert hydra.utils.instantiate(cfg[g]) is not None
    assert (model.obs_dim, model.action_dim) == (env.observation_space.shape[0], env.action_space.shape[0])
    assert isinstance(cfg.solved_reward, float) and cfg.solved_reward == env.solved_reward  # each env has its own


def test_defaults_reproduce_the_reference():
    cfg = _compose()
    p = cfg.pipeline
    assert (p.num_steps, p.update_repeats, p.num_mini_batch, p.gamma, p.use_gae, p.max_grad_norm) == (2000, 80, 1, 0.99, False, 100.0)
    assert (p.save_interval, p.metric_accumulate_interval, p.optimizer.lr) == (200000, 50000, 1e-3)
    assert p.stages[0].max_stage_steps == 1_200_000 and cfg.machine.num_samplers == 8
    assert (cfg.algo.clip_param, cfg.algo.value_loss_coef, cfg.algo.entropy_coef, cfg.algo.clip_value_loss) == (0.2, 0.5, 0.0, True)
    assert (list(cfg.model.hidden_sizes), cfg.model.action_std, cfg.model.learn_std) == ([64, 32], 0.5, False)


@pytest.mark.parametrize("override,message", [
    ("+model.hiden_sizes=[64]", "model.hiden_sizes: unknown key for models.actor_critic.MemorylessActorCritic; did you mean 'hidden_sizes'?"),
    ("pipeline.num_steps=abc", "pipeline.num_steps: expected int, got 'abc'"),
    ("pipeline.gamma=true", "pipeline.gamma: expected float, got True"),
    ("model.hidden_sizes=[64,x]", "model.hidden_sizes: expected Sequence[int], got [64, 'x']"),
    ("+pipeline.stages.0.max_steps=5", "pipeline.stages[0].max_steps: unknown key for rl_core.algo.pipeline.PipelineStage"),
    ("pipeline.optimizer._target_=torch.optim.Adamm", "pipeline.optimizer._target_: cannot import 'torch.optim.Adamm'"),
])
def test_bad_keys_and_types_are_named(override, message):
    cfg = _compose([override])
    with pytest.raises(ConfigError) as e:
        check_config(cfg, GROUPS)
    assert str(e.value).startswith(message)


def test_hydra_sees_the_whole_tree():
    cfg = _compose(["experiment=smoke"])
    assert OmegaConf.select(cfg, "pipeline.stages.0.max_stage_steps") == 1600
