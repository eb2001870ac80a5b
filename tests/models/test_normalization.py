"""Running statistics, the observation normaliser and reward scaling against values computed by hand."""

import math
import threading

import numpy as np
import pytest
import torch

from models.actor_critic import MemorylessActorCritic
from models.normalization import ObsNormalizer, RunningMeanStd
from rl_core.algo.reward_scaling import RewardScaler


def test_running_mean_std_equals_the_statistics_of_everything_seen():
    rms = RunningMeanStd((2,), eps=0.0)
    data = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0], [7.0, 40.0], [9.0, 100.0]])
    rms.update(data[:2])
    rms.update(data[2:])
    # mean (1+3+5+7+9)/5 = 5; population variance ((−4)²+(−2)²+0+2²+4²)/5 = 8
    assert rms.mean.tolist() == pytest.approx([5.0, 40.0]) and rms.var[0].item() == pytest.approx(8.0)
    assert rms.var[1].item() == pytest.approx(np.var([10, 10, 40, 40, 100])) and rms.count.item() == 5


def test_obs_normaliser_is_frozen_in_forward_and_moves_only_on_update():
    norm = ObsNormalizer(2, clip=3.0)
    x = torch.tensor([[2.0, -50.0]])
    assert torch.equal(norm(x), torch.tensor([[2.0, -3.0]]))  # mean 0, var 1 at first: x itself, clipped
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    for _ in range(3):
        norm(torch.randn(10, 2) * 100)
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())
    data = torch.randn(1000, 2) * torch.tensor([2.0, 5.0]) + torch.tensor([1.0, -4.0])
    norm.update(data)
    out = norm(data)
    assert out.mean(0).abs().max() < 0.01 and (out.std(0) - 1).abs().max() < 0.01


def test_a_model_restored_from_its_state_normalises_as_the_trained_one():
    model = MemorylessActorCritic(3, 2, normalize_obs=True)
    model.obs_norm.update(torch.randn(500, 3) * 7 + 3)
    obs = torch.randn(16, 3) * 7 + 3
    again = MemorylessActorCritic(3, 2, normalize_obs=True)
    again.load_state_dict(model.state_dict())  # what test mode does with a checkpoint
    assert "obs_norm.stats.mean" in model.state_dict()
    for a, b in zip(model(obs), again(obs)):
        assert torch.equal(a, b)


def _scaled_by_hand(rewards, dones, gamma, clip, count=1e-4):
    """The recursion written out for one sampler, with plain floats."""
    mean, var, ret, out = 0.0, 1.0, 0.0, []
    for r, d in zip(rewards, dones):
        ret = gamma * ret + r
        delta, total = ret - mean, count + 1
        mean += delta / total
        var = (var * count + delta * delta * count / total) / total  # a batch of one has variance 0
        count = total
        out.append(max(-clip, min(clip, r / math.sqrt(var + 1e-8))))
        ret *= 1 - d
    return out


def test_reward_scaling_divides_by_the_running_std_of_the_discounted_return():
    rewards, dones = [1.0, 2.0, -1.0, 50.0, 0.5], [0, 1, 0, 0, 1]
    scaler = RewardScaler(num_samplers=1, clip=5.0)
    r = torch.tensor(rewards).reshape(5, 1)
    scaler.scale_(r, torch.tensor(dones, dtype=torch.float32).reshape(5, 1), gamma=0.9)
    assert r[:, 0].tolist() == pytest.approx(_scaled_by_hand(rewards, dones, 0.9, 5.0), rel=1e-6)
    assert r[0, 0].item() == 5.0  # the first return's std is tiny (count starts at 1e-4): clipped
    # the return restarted after the episode's end at step 4: nothing carried into the next rollout
    assert scaler.returns.tolist() == [0.0]


def test_reward_scaler_state_continues_exactly():
    torch.manual_seed(0)
    r, d = torch.randn(20, 3), (torch.rand(20, 3) < 0.2).float()
    whole = RewardScaler(3)
    a = r.clone()
    whole.scale_(a, d, 0.99)
    first, second = RewardScaler(3), RewardScaler(3)
    b = r.clone()
    first.scale_(b[:10], d[:10], 0.99)
    second.load_state_dict(first.state_dict())
    second.scale_(b[10:], d[10:], 0.99)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="holds 3 samplers, this run has 2"):
        RewardScaler(2).load_state_dict(first.state_dict())


class _TwoRanks:
    """Two threads standing in for two ranks: ``sum_for(r)`` is rank r's ``Ranks.sum`` (an all_reduce)."""

    def __init__(self) -> None:
        self.barrier, self.slots = threading.Barrier(2), [None, None]

    def sum_for(self, rank):
        def total(values):
            self.slots[rank] = values
            self.barrier.wait()
            out = self.slots[0] + self.slots[1]
            self.barrier.wait()
            return out
        return total

    def run(self, fn0, fn1):
        t = threading.Thread(target=fn1)
        t.start()
        fn0()
        t.join()


def test_statistics_across_two_ranks_equal_those_of_one_process_with_all_rows():
    x = torch.randn(3, 8, 5, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0, 100.0]) + 4.0
    one = ObsNormalizer(5)
    halves, ranks = [ObsNormalizer(5), ObsNormalizer(5)], _TwoRanks()
    for step in range(3):  # three rollouts: the running blend too, not only the first batch
        one.update(x[step])
        ranks.run(lambda: halves[0].update(x[step, :4], ranks.sum_for(0)),
                  lambda: halves[1].update(x[step, 4:], ranks.sum_for(1)))
    for half in halves:
        assert torch.allclose(half.stats.mean, one.stats.mean, rtol=1e-12, atol=1e-12)
        assert torch.allclose(half.stats.var, one.stats.var, rtol=1e-10)
        assert half.stats.count.item() == one.stats.count.item()


def test_reward_scaling_across_two_ranks_equals_one_process_with_all_samplers():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(20, 8, generator=gen) * 3 + 1
    done = (torch.rand(20, 8, generator=gen) < 0.1).float()
    one = RewardScaler(8)
    whole = rewards.clone()
    one.scale_(whole, done, 0.99)
    halves, ranks = [RewardScaler(4), RewardScaler(4)], _TwoRanks()
    parts = [rewards[:, :4].clone(), rewards[:, 4:].clone()]
    ranks.run(lambda: halves[0].scale_(parts[0], done[:, :4], 0.99, ranks.sum_for(0)),
              lambda: halves[1].scale_(parts[1], done[:, 4:], 0.99, ranks.sum_for(1)))
    assert torch.allclose(torch.cat(parts, 1), whole, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(whole, rewards)  # scaled at all
    assert torch.equal(torch.cat([h.returns for h in halves]), one.returns)
    for h in halves:
        assert h.stats.var.item() == pytest.approx(one.stats.var.item(), rel=1e-12)
