"""``machine.compile``: the compiled PPO loss matches eager, a compiler failure falls back to eager."""

import json
import logging

import pytest
import torch

from models.actor_critic import MemorylessActorCritic
from rl_core.algo import compiled as compiled_module
from rl_core.algo.compiled import CompiledLoss
from rl_core.algo.ppo import PPOLoss


def _batch(model, n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 8, generator=g)
    with torch.no_grad():
        mean, value = model(obs)
        actions = mean + 0.5 * torch.randn(mean.shape, generator=g)
        old_lp = model.log_prob(mean + 0.05, actions)  # ratios away from 1, so that some are clipped
    return {"obs": obs, "actions": actions, "old_log_probs": old_lp, "old_values": value + 0.3,
            "returns": torch.randn(n, generator=g) * 3, "advantages": torch.randn(n, generator=g)}


def _loss_and_grads(loss_fn, model, batch):
    model.zero_grad(set_to_none=True)
    total, info = loss_fn(model, batch)
    total.backward()
    return {k: v.item() for k, v in info.items()}, [p.grad.clone() for p in model.parameters()]


def test_compiled_loss_matches_eager_loss_and_gradients():
    torch.manual_seed(0)
    model = MemorylessActorCritic(8, 2)
    loss = PPOLoss()
    compiled = CompiledLoss(loss)
    for seed, n in ((0, 96), (1, 96), (2, 40)):  # the first call checks the backward; a new shape recompiles
        batch = _batch(model, n, seed)
        want_info, want_grads = _loss_and_grads(loss, model, batch)
        got_info, got_grads = _loss_and_grads(compiled, model, batch)
        assert compiled.compiled is not None, "torch.compile fell back to eager"
        assert got_info == pytest.approx(want_info, rel=1e-5, abs=1e-6)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)  # the first call's check adds nothing to .grad


def test_a_compiler_failure_warns_once_and_goes_on_in_eager_mode(monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: no C++ compiler\nmore detail")
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    model = MemorylessActorCritic(8, 2)
    loss = PPOLoss()
    compiled = CompiledLoss(loss)
    batch = _batch(model)
    with caplog.at_level(logging.WARNING, logger="rl_core.algo.compiled"):
        first, _ = _loss_and_grads(compiled, model, batch)
        second, _ = _loss_and_grads(compiled, model, batch)
    want, _ = _loss_and_grads(loss, model, batch)
    assert first == second == want
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "RuntimeError: InductorError: no C++ compiler" in warnings[0]
    assert "more detail" not in warnings[0]


def test_a_failure_on_a_later_minibatch_shape_also_falls_back(monkeypatch, caplog):
    """Unequal minibatches (samplers not divisible by num_mini_batch) compile a second graph mid-run."""
    def compile_for_96_rows_only(fn, **kwargs):
        def run(model, batch):
            if batch["obs"].shape[0] != 96:
                raise RuntimeError("InductorError: second graph failed")
            return fn(model, batch)
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", compile_for_96_rows_only)
    model = MemorylessActorCritic(8, 2)
    loss = PPOLoss()
    compiled = CompiledLoss(loss)
    with caplog.at_level(logging.WARNING, logger="rl_core.algo.compiled"):
        for n in (96, 40, 96, 40):
            batch = _batch(model, n)
            got, _ = _loss_and_grads(compiled, model, batch)
            want, _ = _loss_and_grads(loss, model, batch)
            assert got == want
    assert compiled.compiled is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "second graph failed" in warnings[0]


@pytest.mark.slow
def test_compiled_training_runs_through_launch(launch, tmp_path):
    proc = launch("experiment=smoke", f"run_dir={tmp_path}", "machine.compile=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile failed" not in proc.stderr
    done = json.loads((tmp_path / "DONE").read_text())
    assert done["total_steps"] == 1600
