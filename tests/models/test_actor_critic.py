"""The actor-critic's fast paths compute the same function as its plain nn.Sequential MLPs."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.actor_critic import MemorylessActorCritic


def _reference(model: MemorylessActorCritic, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model as plain modules: Sequential(Linear, Tanh, ...) calls and torch.tanh on the mean."""
    return torch.tanh(model.actor(obs)), model.critic(obs).squeeze(-1)


def test_inference_forward_is_bit_identical_to_the_module_calls():
    torch.manual_seed(0)
    model = MemorylessActorCritic(8, 2)
    obs = torch.randn(8, 8)
    with torch.no_grad():
        mean, value = model(obs)
        ref_mean, ref_value = _reference(model, obs)
    assert torch.equal(mean, ref_mean) and torch.equal(value, ref_value)
    assert mean.shape == (8, 2) and value.shape == (8,)


def test_training_forward_and_gradients_match_torch_tanh():
    torch.manual_seed(1)
    model = MemorylessActorCritic(8, 2, hidden_sizes=(64, 32))
    obs = torch.randn(4096, 8) * 3  # wide inputs reach tanh's saturated ends too
    mean, value = model(obs)
    ref_mean, ref_value = _reference(model, obs)
    assert torch.allclose(mean, ref_mean, atol=1e-6) and torch.allclose(value, ref_value, atol=1e-5)
    assert mean.abs().max() <= 1.0

    def grads(out: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        model.zero_grad()
        ((out[0] ** 2).sum() + out[1].sum()).backward()
        return [p.grad.clone() for p in model.parameters()]

    for g, ref in zip(grads(model(obs)), grads(_reference(model, obs))):
        assert torch.allclose(g, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_first_layer_gradients_match_autograd_linear_with_and_without_an_input_gradient():
    """The first layer's own backward ((xᵀ·g)ᵀ for the weight) gives autograd's gradients, in the weight's
    layout, and the observation's gradient when it asks for one."""
    torch.manual_seed(2)
    model = MemorylessActorCritic(8, 2)
    obs = torch.randn(1000, 8)
    for needs_obs_grad in (False, True):
        grads = []
        for forward in (model, lambda o: _reference(model, o)):
            model.zero_grad()
            x = obs.clone().requires_grad_(needs_obs_grad)
            mean, value = forward(x)
            ((mean ** 2).sum() + value.sum()).backward()
            grads.append([model.actor[0].weight.grad, model.actor[0].bias.grad, model.critic[0].weight.grad,
                          model.critic[0].bias.grad] + ([x.grad] if needs_obs_grad else []))
        for g, ref in zip(*grads):
            assert g.shape == ref.shape and g.is_contiguous()
            assert torch.allclose(g, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


class _PerLayerTanh(torch.autograd.Function):
    """One activation as its own autograd node: 2·sigmoid(2x) − 1 forward, tanh's backward."""

    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x * 2).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.aten.tanh_backward(grad, ctx.saved_tensors[0])


def _per_layer(model: MemorylessActorCritic, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model as one autograd node per layer and activation (F.linear, then the activation)."""

    def mlp(seq: torch.nn.Sequential, out_tanh: bool) -> torch.Tensor:
        linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
        x = obs
        for i, layer in enumerate(linears):
            x = F.linear(x, layer.weight, layer.bias)
            if i < len(linears) - 1 or out_tanh:
                x = _PerLayerTanh.apply(x)
        return x

    return mlp(model.actor, True), mlp(model.critic, False).squeeze(-1)


@pytest.mark.parametrize("hidden_sizes", [(64, 32), (16,), (32, 32, 8)])
def test_the_one_node_training_mlp_is_bit_identical_to_per_layer_autograd(hidden_sizes):
    """Update batches run each MLP as one autograd node with its own backward. Its outputs and gradients
    equal per-layer autograd's to the bit (the first layers' weight gradients, summed as (xᵀ·g)ᵀ, to
    rounding), so a run's trajectory does not depend on which of the two computes it."""
    torch.manual_seed(3)
    model = MemorylessActorCritic(8, 2, hidden_sizes=hidden_sizes)
    obs = torch.randn(4096, 8) * 2
    upstream = torch.randn(4096, 2), torch.randn(4096)
    results = []
    for forward in (model, lambda o: _per_layer(model, o)):
        mean, value = forward(obs)
        grads = torch.autograd.grad((mean * upstream[0]).sum() + (value * upstream[1]).sum(), list(model.parameters()))
        results.append((mean, value, dict(zip([n for n, _ in model.named_parameters()], grads))))
    (mean, value, grads), (ref_mean, ref_value, ref_grads) = results
    assert torch.equal(mean, ref_mean) and torch.equal(value, ref_value)
    for name, g in grads.items():
        if name in ("actor.0.weight", "critic.0.weight"):
            assert torch.allclose(g, ref_grads[name], rtol=1e-5, atol=1e-6 * ref_grads[name].abs().max().item())
        else:
            assert torch.equal(g, ref_grads[name]), name


def test_log_prob_and_entropy_of_the_fixed_std():
    model = MemorylessActorCritic(8, 2, action_std=0.5)
    mean = torch.zeros(3, 2)
    actions = torch.tensor([[0.0, 0.5], [1.0, -1.0], [0.25, 0.0]])
    expected = -(actions ** 2) / (2 * 0.25) - math.log(0.5) - 0.5 * math.log(2 * math.pi)
    assert torch.allclose(model.log_prob(mean, actions), expected)
    entropy = 0.5 * math.log(2 * math.pi * math.e * 0.25)  # ≈ 0.7258 nats per dimension
    assert torch.allclose(model.entropy(mean), torch.full((3, 2), entropy))


def test_relu_training_mlp_matches_per_layer_autograd():
    torch.manual_seed(5)
    model = MemorylessActorCritic(8, 3, hidden_sizes=(32, 16), activation="relu", squash_mean=False)
    obs = torch.randn(512, 8)
    upstream = torch.randn(512, 3), torch.randn(512)
    ref = torch.nn.Sequential(*model.actor), torch.nn.Sequential(*model.critic)
    assert isinstance(model.actor[1], torch.nn.ReLU)
    results = []
    for forward in (model, lambda o: (ref[0](o), ref[1](o).squeeze(-1))):
        mean, value = forward(obs)
        grads = torch.autograd.grad((mean * upstream[0]).sum() + (value * upstream[1]).sum(), list(model.parameters()))
        results.append((mean, value, grads))
    (mean, value, grads), (ref_mean, ref_value, ref_grads) = results
    assert torch.equal(mean, ref_mean) and torch.equal(value, ref_value)
    assert mean.abs().max() > 0 and not torch.equal(mean, torch.tanh(mean))  # a linear mean
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6 * r.abs().max().item())


def test_orthogonal_init_gains_and_zero_biases():
    model = MemorylessActorCritic(11, 3, hidden_sizes=(64, 64), init="orthogonal")
    hidden = model.actor[2].weight  # 64 x 64: orthogonal rows scaled by sqrt(2)
    assert torch.allclose(hidden @ hidden.T, 2 * torch.eye(64), atol=1e-4)
    out = model.actor[4].weight  # 3 x 64: rows orthonormal times 0.01
    assert torch.allclose(out @ out.T, 1e-4 * torch.eye(3), atol=1e-7)
    critic_out = model.critic[4].weight
    assert torch.allclose(critic_out @ critic_out.T, torch.eye(1), atol=1e-5)
    assert all(torch.count_nonzero(m.bias) == 0 for m in (*model.actor, *model.critic) if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gsde_actions_log_probs_and_entropy_are_the_state_dependent_normal(activation):
    """gSDE by hand: z(s) = the actor's last hidden layer (plain module calls), action = mean + z(s)·(σ ⊙ M),
    the Normal's std sqrt(z(s)²·σ² + 1e-6); σ learns from the log-prob, the features only from the mean."""
    torch.manual_seed(0)
    model = MemorylessActorCritic(5, 3, hidden_sizes=(16, 8), activation=activation, squash_mean=False,
                                  learn_std=True, log_prob="joint", use_sde=True, action_std=0.3)
    assert model.log_std.shape == (8, 3) and model.dist_dim == 3 + 8
    obs = torch.randn(6, 5)
    dist, value = model(obs)
    latent = model.actor[:-1](obs)  # Linear, act, Linear, act
    assert torch.allclose(dist[:, 3:], latent, atol=1e-6)
    assert torch.allclose(model.mode(dist), model.actor(obs), atol=1e-6)
    assert torch.allclose(value, model.critic(obs).squeeze(-1), atol=1e-6)

    noise = torch.randn(6, 8, 3)
    with torch.no_grad():
        actions = model.sample(dist, noise=noise)
    by_hand = torch.stack([model.actor(obs)[b] + latent[b] @ (0.3 * noise[b]) for b in range(6)]).detach()
    assert torch.allclose(actions, by_hand, atol=1e-5)

    std = torch.sqrt(latent.detach() ** 2 @ torch.full((8, 3), 0.09) + 1e-6)
    normal = torch.distributions.Normal(model.actor(obs), std)
    assert torch.allclose(model.log_prob(dist, actions), normal.log_prob(actions).sum(-1, keepdim=True), atol=1e-5)
    assert torch.allclose(model.entropy(dist), normal.entropy().sum(-1, keepdim=True), atol=1e-5)

    model.log_prob(dist, actions).sum().backward()
    mine = [p.grad.clone() for p in (model.log_std, model.actor[0].weight)]
    model.zero_grad()
    normal_again = torch.distributions.Normal(model.actor(obs), torch.sqrt(
        model.actor[:-1](obs).detach() ** 2 @ torch.exp(2 * model.log_std) + 1e-6))
    normal_again.log_prob(actions).sum().backward()
    assert mine[0].abs().sum() > 0
    for got, ref in zip(mine, (model.log_std.grad, model.actor[0].weight.grad)):
        assert torch.allclose(got, ref, atol=1e-5)


def test_gsde_settings_out_of_range_are_refused():
    with pytest.raises(ValueError, match="sde_sample_freq"):
        MemorylessActorCritic(5, 3, use_sde=True, sde_sample_freq=0)
