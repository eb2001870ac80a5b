"""``machine.fused_update``: PPO's gradients written out by hand equal autograd's, for every model and loss
setting the path accepts, on minibatches where the ratio and value clips are active; and what it refuses."""

import itertools

import pytest
import torch

from models.actor_critic import MemorylessActorCritic
from rl_core.algo.fused_ppo import FusedPPOGradients, fused_unsupported
from rl_core.algo.ppo import PPOLoss, ppo_update, prepare_advantages
from rl_core.algo.storage import RolloutStorage
from rl_core.machine import Machine

MUJOCO = dict(hidden_sizes=[64, 64], action_std=1.0, learn_std=True, log_prob="joint", init="orthogonal",
              squash_mean=False, normalize_obs=True)


def _rollout(model, steps=64, samplers=4, seed=0):
    """A rollout of random observations whose actions, log-probs and values came from ``model`` before its
    weights moved (so that ratios leave the clip range and values the value clip)."""
    gen = torch.Generator().manual_seed(seed)
    st = RolloutStorage(steps, samplers, model.obs_dim, model.action_dim, model.log_prob_dims, torch.device("cpu"))
    st.obs.normal_(generator=gen)
    st.rewards.normal_(generator=gen)
    with torch.no_grad():
        if model.obs_norm is not None:
            model.obs_norm.update(st.obs * 2 + 1)
        dist, value = model(st.obs[:-1])
        st.actions.copy_(dist + 0.5 * torch.randn(dist.shape, generator=gen))
        st.log_probs.copy_(model.log_prob(dist, st.actions))
        st.values[:-1] = value + 0.3 * torch.randn(value.shape, generator=gen)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return st, gen


@pytest.mark.parametrize("model_kw,loss_kw", [
    (MUJOCO, {}),
    (MUJOCO, dict(clip_value_loss=False, entropy_coef=0.01)),
    ({}, {}),  # the reference's model: fixed std, per-dimension ratios, tanh mean
    (dict(activation="relu", learn_std=True), dict(entropy_coef=0.1)),
    (dict(learn_std=True, log_prob="per_dim", hidden_sizes=[32]), dict(entropy_coef=0.05, normalize_advantage=False)),
])
def test_fused_gradients_and_loss_terms_equal_autograds(model_kw, loss_kw):
    torch.manual_seed(0)
    model = MemorylessActorCritic(5, 3, **model_kw)
    loss = PPOLoss(**loss_kw)
    st, gen = _rollout(model)
    prepare_advantages(st, loss, 0.99, True, 0.95, False)
    fused = FusedPPOGradients(loss)
    clipped = value_clipped = 0
    for batch in itertools.islice(st.minibatches(None, gen, 64), 4):
        with torch.no_grad():
            dist, values = model(batch["obs"])
            ratio = torch.exp(model.log_prob(dist, batch["actions"]) - batch["old_log_probs"])
        clipped += int(((ratio - 1).abs() > loss.clip_param).sum())
        value_clipped += int(((values - batch["old_values"]).abs() > loss.clip_param).sum())
        model.zero_grad(set_to_none=True)
        total, ref_info = loss(model, batch)
        total.backward()
        ref = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        info = fused(model, batch)
        assert set(info) == set(ref_info)
        for key, v in ref_info.items():
            torch.testing.assert_close(info[key], v, rtol=1e-5, atol=1e-6, msg=key)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-6 * ref[name].abs().max().item(),
                                       msg=name)
    assert clipped > 0 and value_clipped > 0  # both clips were active somewhere, so their branches were checked


def test_a_fused_update_moves_the_weights_as_autograds_does():
    torch.manual_seed(0)
    ref_model = MemorylessActorCritic(5, 3, **MUJOCO)
    model = MemorylessActorCritic(5, 3, **MUJOCO)
    model.load_state_dict(ref_model.state_dict())
    start = {n: p.clone() for n, p in ref_model.named_parameters()}
    loss = PPOLoss()
    out = []
    for m, update_loss in ((ref_model, loss), (model, FusedPPOGradients(loss))):
        st, _ = _rollout(m, seed=1)
        prepare_advantages(st, loss, 0.99, True, 0.95, False)
        opt = torch.optim.Adam(m.parameters(), lr=3e-4, eps=1e-5, fused=True)
        out.append(ppo_update(m, update_loss, opt, st, 2, None, 0.5, torch.Generator().manual_seed(2), 32))
    for (name, p), q in zip(ref_model.named_parameters(), model.parameters()):
        assert not torch.equal(p, start[name]), name  # the update moved it
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
    assert out[0].keys() == out[1].keys()
    for key in out[0]:
        assert out[1][key] == pytest.approx(out[0][key], rel=1e-4, abs=1e-6), key


def test_what_the_fused_update_refuses():
    assert fused_unsupported(MemorylessActorCritic(5, 3, **MUJOCO)) is None
    assert "gSDE" in fused_unsupported(MemorylessActorCritic(5, 3, use_sde=True))
    assert "not the Gaussian MLP actor-critic" in fused_unsupported(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="fused_update: .* cannot run with compile=true"):
        Machine(compile=True, fused_update=True)
