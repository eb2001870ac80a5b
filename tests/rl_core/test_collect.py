"""Rollout collection: what lands in the storage is what the policy and the envs produced, step for step."""

from functools import partial

import numpy as np
import torch

from envs.factory import GymTaskFactory
from models.actor_critic import MemorylessActorCritic
from rl_core.machine import Machine
from rl_core.algo.pipeline import PipelineStage, TrainingPipeline
from rl_core.algo.ppo import PPO
from rl_core.distributed import Ranks

T, N, SEED = 150, 3, 5


def test_collected_rollout_matches_the_policy_and_a_replay_of_the_envs(tmp_path):
    torch.manual_seed(0)
    factory, model = GymTaskFactory(), MemorylessActorCritic(8, 2)
    pipeline = TrainingPipeline([PipelineStage(max_stage_steps=T * N)], partial(torch.optim.Adam, lr=1e-3),
                                num_steps=T, bootstrap_truncation=True)
    algo, episodes = PPO(), []
    algo.bind(model, pipeline, Machine(num_samplers=N), Ranks(), SEED)
    with factory.train_samplers(N, 0, SEED) as samplers:
        algo.start(samplers.reset(), rollouts=0)
        assert algo.collect(samplers, 0, episodes) == T * N
    storage = algo.rollout

    # actions: mean + std * noise, the noise drawn from the run's generator in one [T, N, A] call
    noise = torch.randn((T, N, 2), generator=torch.Generator().manual_seed(SEED))
    assert torch.allclose(storage.actions, storage.means + 0.5 * noise, atol=1e-6)
    with torch.no_grad():  # per-step forwards agree with one batched forward over the rollout's obs
        mean, value = model(storage.obs)
    assert torch.allclose(storage.means, mean[:-1], atol=1e-6)
    assert torch.allclose(storage.values, value, atol=1e-5)
    assert torch.allclose(storage.log_probs, model.log_prob(mean[:-1], storage.actions), atol=1e-5)

    # the env results: a fresh set of samplers with the same seed, fed the stored actions
    rewards, obs, ended = [], [storage.obs[0].numpy().copy()], []
    with factory.train_samplers(N, 0, SEED) as replay:
        assert np.array_equal(replay.reset(), obs[0])
        for t in range(T):
            ended += replay.step(storage.actions[t].numpy())
            rewards.append(replay.buf.reward.copy())
            obs.append(replay.buf.obs.copy())
            assert np.array_equal(storage.terminated[t].numpy().astype(bool), replay.buf.terminated)
            assert np.array_equal(storage.truncated[t].numpy().astype(bool), replay.buf.truncated)
    assert np.array_equal(storage.rewards.numpy(), np.stack(rewards))
    assert np.array_equal(storage.obs.numpy(), np.stack(obs))
    assert ended and len(ended) == len(episodes) == int(storage.terminated.sum() + storage.truncated.sum())
    # a time limit is bootstrapped only where one happened
    assert torch.equal(storage.final_values != 0, storage.truncated.bool())


def test_gsde_noise_matrices_are_held_for_sde_sample_freq_steps_per_sampler():
    """With gSDE the rollout draws one [L, A] matrix per sampler every k steps, from the run's generator in one
    call: action - mean = z(s_t) · (σ ⊙ M[t // k, n]) at every step."""
    torch.manual_seed(0)
    steps, k = 12, 5
    factory = GymTaskFactory()
    model = MemorylessActorCritic(8, 2, hidden_sizes=(16, 4), use_sde=True, sde_sample_freq=k, action_std=0.2)
    pipeline = TrainingPipeline([PipelineStage(max_stage_steps=steps * N)], partial(torch.optim.Adam, lr=1e-3),
                                num_steps=steps)
    algo = PPO()
    algo.bind(model, pipeline, Machine(num_samplers=N), Ranks(), SEED)
    with factory.train_samplers(N, 0, SEED) as samplers:
        algo.start(samplers.reset(), rollouts=0)
        algo.collect(samplers, 0, [])
    storage = algo.rollout
    matrices = torch.randn((3, N, 4, 2), generator=torch.Generator().manual_seed(SEED))  # ceil(12 / 5) = 3
    mean, latent = storage.means[..., :2], storage.means[..., 2:]
    for t in range(steps):
        push = torch.einsum("nl,nla->na", latent[t], 0.2 * matrices[t // k])
        assert torch.allclose(storage.actions[t] - mean[t], push, atol=1e-6)
    assert torch.allclose(storage.log_probs, model.log_prob(storage.means, storage.actions), atol=1e-6)
