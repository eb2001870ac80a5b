"""SAC and TD3 parts: the squashed Gaussian's log-density, the batched twin critics, the replay buffer and its
segment files, and the transitions collection puts into the buffer."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from envs.factory import GymTaskFactory
from models.q_actor_critic import QActorCritic
from rl_core.algo.pipeline import PipelineStage, TrainingPipeline
from rl_core.algo.replay import ReplayBuffer
from rl_core.algo.sac import SAC
from rl_core.distributed import Ranks
from rl_core.machine import Machine
from rl_core.replay_files import ReplayFiles


def test_squashed_gaussian_log_prob_is_torchs_tanh_transformed_normal():
    torch.manual_seed(0)
    model = QActorCritic(5, 3, hidden_sizes=(16,))
    obs, noise = torch.randn(64, 5), torch.randn(64, 3)
    action, log_prob = model.sample(obs, noise)
    mean, raw = model.actor(obs).chunk(2, -1)
    log_std = -5.0 + 3.5 * (torch.tanh(raw) + 1)  # [-5, 2]
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    u = mean + log_std.exp() * noise
    assert torch.allclose(action, torch.tanh(u))
    assert torch.allclose(log_prob, dist.log_prob(torch.tanh(u).clamp(-1 + 1e-7, 1 - 1e-7)).sum(-1), atol=2e-3)
    # away from saturation the two agree tightly
    inner = torch.tanh(u).abs().amax(-1) < 0.99
    assert torch.allclose(log_prob[inner], dist.log_prob(torch.tanh(u)).sum(-1)[inner], atol=1e-4)
    # deterministic action: tanh of the mean, in the env's [-1, 1]
    assert torch.allclose(model(obs)[0], torch.tanh(mean))


def test_twin_critics_are_two_independent_mlps():
    torch.manual_seed(1)
    model = QActorCritic(4, 2, hidden_sizes=(8, 8))
    obs, act = torch.randn(10, 4), torch.rand(10, 2) * 2 - 1
    q = model.q(obs, act)
    x = torch.cat([obs, act], -1)
    for k in range(2):
        h = x
        for i, (w, b) in enumerate(zip(model.critic.weights, model.critic.biases)):
            h = h @ w[k] + b[k]
            h = torch.relu(h) if i < 2 else h
        assert torch.allclose(q[k], h.squeeze(-1), atol=1e-6)
    assert torch.equal(model.q(obs, act, heads=1), q[:1])


def _rows(start, n, d=3, a=2):
    g = torch.arange(start, start + n, dtype=torch.float32)
    return {"obs": g[:, None].expand(n, d).clone(), "actions": -g[:, None].expand(n, a).clone(), "rewards": g,
            "terminated": (g % 7 == 0).float(), "next_obs": g[:, None].expand(n, d) + 0.5}


def test_buffer_wraps_and_segments_hold_only_new_rows(tmp_path):
    buf = ReplayBuffer(10, 3, 2, torch.device("cpu"))
    files = ReplayFiles(tmp_path)
    for step in range(4):  # 4 steps of 3 samplers
        buf.add(**_rows(3 * step, 3))
    first = files.save(buf)
    assert first["segments"] == [[2, 12, "replay_000000000002_000000000012.pt"]]  # 12 added, 10 held
    for step in range(4, 7):
        buf.add(**_rows(3 * step, 3))
    entry = files.save(buf)  # 21 rows added, 10 held: [11, 21)
    assert [s[:2] for s in entry["segments"]] == [[2, 12], [12, 21]]  # the second file has only the 9 new rows
    assert torch.load(tmp_path / entry["segments"][1][2])["rewards"].tolist() == list(range(12, 21))
    assert len(buf) == 10 and sorted(buf.data["rewards"].tolist()) == list(range(11, 21))
    fresh = ReplayBuffer(10, 3, 2, torch.device("cpu"))
    ReplayFiles(tmp_path).load(fresh, entry, tmp_path / "ckpt")
    assert fresh.added == 21 and all(torch.equal(fresh.data[k], buf.data[k]) for k in buf.data)
    batch = fresh.sample(100, torch.Generator().manual_seed(0))
    assert set(batch["rewards"].tolist()) <= set(range(11, 21))
    assert torch.equal(batch["next_obs"][:, 0], batch["rewards"] + 0.5)  # rows stay whole


def test_collected_transitions_are_the_envs_with_time_limits_bootstrapped(tmp_path):
    """Pendulum's 200-step limit inside 250 steps of 2 samplers: the buffer's rows replay the envs exactly, the
    row that hit the limit holds the final observation as next_obs and is not terminal."""
    factory = GymTaskFactory("Pendulum-v1", action_handling="rescale")
    model = QActorCritic(3, 1, hidden_sizes=(16,))
    pipeline = TrainingPipeline([PipelineStage(max_stage_steps=500)], partial(torch.optim.Adam, lr=1e-3))
    algo = SAC(buffer_size=1000, learning_starts=100, batch_size=8)
    algo.bind(model, pipeline, Machine(num_samplers=2), Ranks(), seed=3)
    episodes = []
    with factory.train_samplers(2, 0, 3) as samplers:
        algo.start(samplers.reset(), 0)
        for _ in range(250):
            algo.collect(samplers, 0, episodes)
            algo.update(0)
    assert algo.steps == 500 and algo.buffer.added == 500 and algo.updates == 250 - 50 + 1
    d = {k: v[:500] for k, v in algo.buffer.data.items()}
    obs, nxt = d["obs"].view(250, 2, 3), d["next_obs"].view(250, 2, 3)
    with factory.train_samplers(2, 0, 3) as replay:
        first = replay.reset()
        assert np.array_equal(first, obs[0].numpy())
        for t in range(250):
            replay.step(d["actions"].view(250, 2, 1)[t].numpy())
            ended = replay.buf.truncated
            expect = np.where(ended[:, None], replay.buf.final_obs, replay.buf.obs)
            assert np.array_equal(nxt[t].numpy(), expect)
            assert np.array_equal(d["rewards"].view(250, 2)[t].numpy(), replay.buf.reward)
            if t + 1 < 250:
                assert np.array_equal(obs[t + 1].numpy(), replay.buf.obs)  # the reset obs after the limit
    assert len(episodes) == 2 and d["terminated"].sum() == 0  # Pendulum never terminates
    assert not torch.equal(obs[200], nxt[199])  # the episode's end is not the next episode's start
    assert math.isclose(float(algo.log_alpha.exp()), 1.0, rel_tol=0.2) and float(algo.log_alpha.exp()) != 1.0


def test_a_segment_file_stores_its_rows_not_the_whole_ring(tmp_path):
    buf = ReplayBuffer(100_000, 3, 2, torch.device("cpu"))
    buf.add(**_rows(0, 30))  # rows [0, 30): a slice of the ring, no wrap
    (segment,) = ReplayFiles(tmp_path).save(buf)["segments"]
    rows = torch.load(tmp_path / segment[2])
    assert {k: v.untyped_storage().nbytes() for k, v in rows.items()} == {
        "obs": 30 * 3 * 4, "actions": 30 * 2 * 4, "rewards": 30 * 4, "terminated": 30 * 4, "next_obs": 30 * 3 * 4}
    assert (tmp_path / segment[2]).stat().st_size < 30 * buf.row_bytes + 4096


def _stream(plain, indexed, steps, n, d, gen):
    """The same env steps into both buffers: random obs, episodes ending at random (short, so the final ring grows)."""
    obs = torch.randn(n, d, generator=gen)
    for _ in range(steps):
        nxt = torch.randn(n, d, generator=gen)
        ended = torch.rand(n, generator=gen) < 0.3
        final = torch.where(ended[:, None], torch.randn(n, d, generator=gen), nxt)  # the final obs, not the reset one
        rows = {"obs": obs, "actions": torch.rand(n, 1, generator=gen), "rewards": torch.randn(n, generator=gen),
                "terminated": (ended & (torch.rand(n, generator=gen) < 0.5)).float(), "next_obs": final, "ended": ended}
        plain.add(**rows)
        indexed.add(**rows)
        obs = nxt


def test_the_indexed_buffer_rebuilds_every_transition_and_resumes_from_its_segments(tmp_path):
    from rl_core.algo.replay import IndexedReplayBuffer
    from rl_core.checkpoint import CheckpointError

    n, d, cap, gen = 3, 4, 150, torch.Generator().manual_seed(0)
    plain, indexed = ReplayBuffer(cap, d, 1, torch.device("cpu")), IndexedReplayBuffer(cap, d, 1, torch.device("cpu"), n)
    files = ReplayFiles(tmp_path)
    _stream(plain, indexed, 40, n, d, gen)  # 120 rows: not yet wrapped
    files.save(indexed)
    _stream(plain, indexed, 50, n, d, gen)  # 270 rows: wrapped, the final ring grown past its 16
    entry = files.save(indexed)
    assert indexed.final.shape[0] > 16 and indexed.row_bytes < plain.row_bytes
    held = torch.arange(indexed.added - cap, indexed.added - n)  # every row whose next row is held
    got, want = indexed.batch(held), {k: v[held % cap] for k, v in plain.data.items()}
    assert all(torch.equal(got[k], want[k]) for k in want)
    fresh = IndexedReplayBuffer(cap, d, 1, torch.device("cpu"), n)
    ReplayFiles(tmp_path).load(fresh, entry, tmp_path / "ckpt")
    again = fresh.batch(held)
    assert fresh.added == 270 and all(torch.equal(again[k], want[k]) for k in want)
    a, b = indexed.sample(64, torch.Generator().manual_seed(5)), fresh.sample(64, torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="optimize_memory_usage=true"):
        ReplayFiles(tmp_path).load(ReplayBuffer(cap, d, 1, torch.device("cpu")), entry, tmp_path / "ckpt")
