"""Returns and advantages against values worked out by hand."""

import pytest
import torch

from rl_core.algo.ppo import compute_returns, normalize


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# One sampler, 3 steps, gamma 0.5. rewards 1, 2, 4; values V(s0..s3) = 10, 20, 30, 40.
REWARDS = _t([[1.0], [2.0], [4.0]])
VALUES = _t([[10.0], [20.0], [30.0], [40.0]])
ZERO = torch.zeros(3, 1)


def test_monte_carlo_bootstraps_with_last_value():
    # R2 = 4 + .5*40 = 24; R1 = 2 + .5*24 = 14; R0 = 1 + .5*14 = 8
    r = compute_returns(REWARDS, VALUES, ZERO, ZERO, ZERO, gamma=0.5)
    assert r.squeeze(1).tolist() == [8.0, 14.0, 24.0]


def test_termination_cuts_the_return():
    term = _t([[0.0], [1.0], [0.0]])  # episode ends at step 1; step 2 starts a new one
    # R2 = 4 + .5*40 = 24; R1 = 2 (terminal); R0 = 1 + .5*2 = 2
    r = compute_returns(REWARDS, VALUES, term, ZERO, ZERO, gamma=0.5)
    assert r.squeeze(1).tolist() == [2.0, 2.0, 24.0]


def test_truncation_is_terminal_by_default_and_bootstraps_when_asked():
    trunc = _t([[0.0], [1.0], [0.0]])
    final = _t([[0.0], [100.0], [0.0]])  # V(final obs of the truncated episode)
    ref = compute_returns(REWARDS, VALUES, ZERO, trunc, final, gamma=0.5)
    assert ref.squeeze(1).tolist() == [2.0, 2.0, 24.0]
    # bootstrapped: R1 = 2 + .5*100 = 52; R0 = 1 + .5*52 = 27
    boot = compute_returns(REWARDS, VALUES, ZERO, trunc, final, gamma=0.5, bootstrap_truncation=True)
    assert boot.squeeze(1).tolist() == [27.0, 52.0, 24.0]


def test_gae_by_hand():
    gamma, lam = 0.5, 0.5
    # deltas: d2 = 4 + .5*40 - 30 = -6; d1 = 2 + .5*30 - 20 = -3; d0 = 1 + .5*20 - 10 = 1
    # A2 = -6; A1 = -3 + .25*(-6) = -4.5; A0 = 1 + .25*(-4.5) = -0.125; returns = A + V
    r = compute_returns(REWARDS, VALUES, ZERO, ZERO, ZERO, gamma, use_gae=True, gae_lambda=lam)
    assert r.squeeze(1).tolist() == pytest.approx([9.875, 15.5, 24.0])


def test_gae_with_lambda_one_equals_monte_carlo():
    torch.manual_seed(0)
    rew, val = torch.randn(7, 3), torch.randn(8, 3)
    term = (torch.rand(7, 3) < 0.2).float()
    mc = compute_returns(rew, val, term, torch.zeros(7, 3), torch.zeros(7, 3), 0.9)
    gae = compute_returns(rew, val, term, torch.zeros(7, 3), torch.zeros(7, 3), 0.9, use_gae=True, gae_lambda=1.0)
    assert torch.allclose(mc, gae, atol=1e-5)


def test_normalize_uses_mean_and_std_plus_eps():
    a = _t([1.0, 2.0, 3.0, 6.0])
    # mean 3, sample std sqrt((4+1+0+9)/3) = sqrt(14/3)
    std = (14 / 3) ** 0.5
    assert normalize(a).tolist() == pytest.approx([(x - 3) / (std + 1e-5) for x in (1, 2, 3, 6)])
