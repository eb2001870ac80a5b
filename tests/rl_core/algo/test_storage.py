import torch

from rl_core.algo.storage import RolloutStorage


def _storage():
    s = RolloutStorage(num_steps=3, num_samplers=4, obs_dim=2, action_dim=2, log_prob_dims=2, device=torch.device("cpu"))
    # obs[t, n] = (n, t) so every row says which sampler and step it came from
    for t in range(4):
        for n in range(4):
            s.obs[t, n] = torch.tensor([n, t], dtype=torch.float32)
    s.returns.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4))
    return s


def test_one_minibatch_is_the_whole_rollout_without_copies():
    s = _storage()
    (batch,) = list(s.minibatches(1))
    assert batch["obs"].shape == (12, 2) and batch["returns"].shape == (12,)
    assert batch["obs"].data_ptr() == s.obs.data_ptr()  # a view
    assert batch["obs"][:, 1].max() == 2  # obs[T] (the next rollout's first) is not in the batch


def test_minibatches_split_by_sampler_not_by_step():
    s = _storage()
    batches = list(s.minibatches(2, torch.Generator().manual_seed(0)))
    assert len(batches) == 2
    seen = []
    for b in batches:
        samplers = b["obs"][:, 0].unique().tolist()
        assert len(samplers) == 2
        for n in samplers:  # each sampler's 3 steps stay together, returns matching
            rows = b["obs"][:, 0] == n
            assert sorted(b["obs"][rows, 1].tolist()) == [0, 1, 2]
            assert sorted(b["returns"][rows].tolist()) == [4 * t + n for t in range(3)]
        seen += samplers
    assert sorted(seen) == [0, 1, 2, 3]


def test_minibatches_that_do_not_divide_the_samplers_are_as_many_as_asked():
    s = _storage()
    batches = list(s.minibatches(3, torch.Generator().manual_seed(0)))
    sizes = sorted(b["obs"][:, 0].unique().numel() for b in batches)
    assert sizes == [1, 1, 2]  # 4 samplers in 3 batches, each sampler in one
    assert sorted(torch.cat([b["obs"][:, 0].unique() for b in batches]).tolist()) == [0, 1, 2, 3]


def test_transition_minibatches_shuffle_every_step_of_every_sampler_once_per_pass():
    s = _storage()  # 3 steps x 4 samplers = 12 transitions
    batches = list(s.minibatches(1, torch.Generator().manual_seed(0), minibatch_size=5))
    assert [len(b["returns"]) for b in batches] == [5, 5, 2]  # the last one is what is left
    rows = torch.cat([b["obs"] for b in batches])
    assert sorted(map(tuple, rows.tolist())) == sorted((float(n), float(t)) for n in range(4) for t in range(3))
    for b in batches:  # each row's fields stay together: returns[t, n] = 4t + n
        assert torch.equal(b["returns"], 4 * b["obs"][:, 1] + b["obs"][:, 0])
    # not by sampler: the first batch mixes samplers and steps
    assert len(batches[0]["obs"][:, 0].unique()) > 1 and len(batches[0]["obs"][:, 1].unique()) > 1


def test_a_single_sampler_can_minibatch_over_its_steps():
    s = RolloutStorage(num_steps=8, num_samplers=1, obs_dim=1, action_dim=1, log_prob_dims=1, device=torch.device("cpu"))
    s.returns.copy_(torch.arange(8.0).reshape(8, 1))
    batches = list(s.minibatches(1, torch.Generator().manual_seed(1), minibatch_size=2))
    assert len(batches) == 4 and sorted(torch.cat([b["returns"] for b in batches]).tolist()) == list(range(8))


def test_a_cut_rollout_is_a_view_of_its_first_steps_and_makes_as_many_transition_batches():
    s = _storage()  # 3 steps x 4 samplers
    cut = s.prefix(2)
    assert cut.num_steps == 2 and cut.obs.shape == (3, 4, 2) and cut.values.shape == (3, 4)
    assert cut.returns.shape == (2, 4) and cut.returns.data_ptr() == s.returns.data_ptr()
    cut.advantages.fill_(7.0)  # writes go through to the whole rollout's first steps
    assert s.advantages[:2].eq(7.0).all() and s.advantages[2].eq(0.0).all()
    # a whole rollout of 12 transitions in batches of 5 is 3 optimizer steps; its cut of 8 is 3 as well
    batches = list(cut.minibatches(1, torch.Generator().manual_seed(0), minibatch_size=5))
    assert [len(b["returns"]) for b in batches] == [3, 3, 2]
    assert sorted(torch.cat([b["obs"] for b in batches])[:, 1].tolist()) == [0.0] * 4 + [1.0] * 4
    cut.start_next()  # obs[2], the first of the next rollout
    assert s.obs[0, :, 1].eq(2.0).all()
