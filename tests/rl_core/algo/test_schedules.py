import pytest
import torch

from rl_core.algo.schedules import EnvStepLR, LinearDecay


def test_linear_decay_over_env_steps():
    d = LinearDecay(steps=1_200_000)
    assert d(0) == 1.0
    assert d(600_000) == pytest.approx(0.5)
    assert d(1_200_000) == 0.0
    assert d(2_000_000) == 0.0  # stays at the end value
    assert LinearDecay(steps=100, startp=1.0, endp=0.1)(50) == pytest.approx(0.55)


def test_env_step_lr_follows_total_steps_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = EnvStepLR(opt, LinearDecay(steps=1000))
    sched.step_to(250)
    assert opt.param_groups[0]["lr"] == pytest.approx(7.5e-4)
    state = sched.state_dict()
    opt2 = torch.optim.Adam([p], lr=1e-3)
    sched2 = EnvStepLR(opt2, LinearDecay(steps=1000))
    sched2.load_state_dict(state)
    sched2.step_to(500)
    assert opt2.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_bad_steps_rejected():
    with pytest.raises(ValueError, match="steps"):
        LinearDecay(steps=0)
