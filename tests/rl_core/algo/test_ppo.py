"""The PPO loss: per-dimension vs joint ratios, value clipping, entropy."""

import math

import pytest
import torch

from models.actor_critic import MemorylessActorCritic
from rl_core.algo.ppo import PPOLoss


class FixedModel(MemorylessActorCritic):
    """Outputs a given mean and value whatever the observation, so the loss can be worked by hand."""

    def __init__(self, mean, value, log_prob="per_dim"):
        super().__init__(obs_dim=1, action_dim=2, log_prob=log_prob)
        self.m, self.v = mean, value

    def forward(self, obs):
        return self.m.expand(obs.shape[0], -1), self.v.expand(obs.shape[0])


def _batch(model, old_mean, actions, adv, old_value=0.0, ret=0.0):
    with torch.no_grad():
        old_lp = model.log_prob(old_mean, actions)
    return {"obs": torch.zeros(1, 1), "actions": actions, "old_log_probs": old_lp,
            "old_values": torch.tensor([old_value]), "returns": torch.tensor([ret]), "advantages": torch.tensor([adv])}


def test_per_dim_ratios_are_clipped_each_while_joint_clips_the_product():
    # Action (0.5, 0.5), std 0.5. Old mean (0.4, 0.5) → new mean (0.5, 0.4): dimension 0 gets more
    # likely by e^0.02 (= exp(0.1²/2σ²)), dimension 1 less likely by e^-0.02; the joint ratio is 1.
    actions = torch.tensor([[0.5, 0.5]])
    old_mean, new_mean = torch.tensor([[0.4, 0.5]]), torch.tensor([[0.5, 0.4]])
    up, down = math.exp(0.02), math.exp(-0.02)
    loss = PPOLoss(clip_param=0.01, value_loss_coef=0.0)
    per_dim = FixedModel(new_mean, torch.tensor(0.0))
    joint = FixedModel(new_mean, torch.tensor(0.0), log_prob="joint")
    # A = +1: dim 0 is clipped at 1.01, dim 1 keeps its lower ratio; mean over the 2 dims.
    _, info = loss(per_dim, _batch(per_dim, old_mean, actions, adv=1.0))
    assert info["action"].item() == pytest.approx(-(1.01 + down) / 2, abs=1e-6)
    _, info = loss(joint, _batch(joint, old_mean, actions, adv=1.0))
    assert info["action"].item() == pytest.approx(-1.0, abs=1e-6)
    # A = -1: the pessimistic min keeps dim 0's raw ratio and dim 1's clip at 0.99.
    _, info = loss(per_dim, _batch(per_dim, old_mean, actions, adv=-1.0))
    assert info["action"].item() == pytest.approx((up + 0.99) / 2, abs=1e-6)
    _, info = loss(joint, _batch(joint, old_mean, actions, adv=-1.0))
    assert info["action"].item() == pytest.approx(1.0, abs=1e-6)


def test_value_loss_is_clipped_around_old_value():
    model = FixedModel(torch.zeros(1, 2), torch.tensor(5.0))
    batch = _batch(model, torch.zeros(1, 2), torch.zeros(1, 2), adv=0.0, old_value=0.0, ret=10.0)
    # unclipped: (5-10)^2 = 25; clipped prediction 0 + clamp(5, ±0.2) = 0.2: (0.2-10)^2 = 96.04
    _, info = PPOLoss(clip_param=0.2)(model, batch)
    assert info["value"].item() == pytest.approx(0.5 * 96.04, rel=1e-5)
    _, info = PPOLoss(clip_param=0.2, clip_value_loss=False)(model, batch)
    assert info["value"].item() == pytest.approx(0.5 * 25.0)


def test_total_combines_terms_with_their_coefficients():
    model = FixedModel(torch.zeros(1, 2), torch.tensor(1.0))
    batch = _batch(model, torch.zeros(1, 2), torch.zeros(1, 2), adv=2.0, ret=3.0)
    total, info = PPOLoss(value_loss_coef=0.5, entropy_coef=0.1, clip_value_loss=False)(model, batch)
    # action loss = -(1 * 2) = -2; value = 0.5*(1-3)^2 = 2; entropy = 0.7258
    assert info["action"].item() == pytest.approx(-2.0)
    assert total.item() == pytest.approx(0.5 * 2.0 - 2.0 - 0.1 * info["entropy"].item(), rel=1e-6)


def test_reference_entropy_constant():
    # Normal with σ = 0.5: ½ ln(2πe σ²) = 0.7258 nats per dimension (the reference's fixed std).
    model = MemorylessActorCritic(8, 2)
    ent = model.entropy(torch.zeros(4, 2))
    assert ent.shape == (4, 2)
    assert ent[0, 0].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.25), abs=1e-6)
    assert ent[0, 0].item() == pytest.approx(0.7258, abs=1e-4)
    joint = MemorylessActorCritic(8, 2, log_prob="joint")
    assert joint.entropy(torch.zeros(4, 2)).shape == (4, 1)
    assert joint.entropy(torch.zeros(4, 2))[0, 0].item() == pytest.approx(2 * 0.7258, abs=2e-4)
