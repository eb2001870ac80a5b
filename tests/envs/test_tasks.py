"""Task samplers: reference seeding, fixed eval tasks, metrics, exact resume, worker failures."""

import os
import signal
import time

import numpy as np
import pytest

from envs.factory import GymTaskFactory
from envs.samplers import SamplerError, Samplers
from envs.task import resolve_env_id
from rl_core.machine import Machine


@pytest.fixture(scope="module")
def factory():
    return GymTaskFactory(valid_episodes_per_sampler=2)


def test_v2_id_maps_to_v3_and_unknown_ids_suggest():
    assert resolve_env_id("LunarLanderContinuous-v2") == "LunarLanderContinuous-v3"
    with pytest.raises(ValueError, match="LunarLanderContinuous"):
        resolve_env_id("LunarLanderContinous-v3")


def test_eval_seeds_follow_the_reference(factory):
    # sampler p plays env seeds range(k*p, k*p + k), k episodes per sampler
    assert factory.task_seeds("valid", 0) == [0, 1]
    assert factory.task_seeds("valid", 2) == [4, 5]
    assert factory.task_seeds("train", 0) is None


def test_eval_tasks_replay_identically_and_then_exhaust(factory):
    def play():
        rng = np.random.default_rng(123)  # the same action sequence both times
        with Samplers(factory, "valid", 2, num_workers=0, run_seed=7) as s:
            s.reset()
            eps, steps = [], 0
            while s.buf.active.any():
                eps += s.step(rng.uniform(-1, 1, (2, 2)).astype(np.float32))
                steps += 1
            return sorted((e["sampler"], e["seed"], e["reward"], e["ep_length"]) for e in eps)

    a, b = play(), play()
    assert a == b
    assert [(e[0], e[1]) for e in a] == [(0, 0), (0, 1), (1, 2), (1, 3)]


def test_training_seeds_differ_per_sampler_and_run_seed(factory):
    s = [factory.make("train", i, run_seed=1) for i in range(2)] + [factory.make("train", 0, run_seed=2)]
    first = [x.rng.integers(2**31) for x in s]
    assert len(set(first)) == 3
    assert factory.make("train", 0, run_seed=1).rng.integers(2**31) == first[0]


def test_episode_metrics_and_success_threshold():
    f = GymTaskFactory(success_threshold=-1e9)  # every episode "succeeds"
    sampler = f.make("test", 0, 0)
    sampler.reset()
    total, n = 0.0, 0
    while True:
        obs, r, term, trunc, m = sampler.step(np.zeros(2, np.float32))
        total += r
        n += 1
        if m is not None:
            break
    assert m["reward"] == pytest.approx(total) and m["ep_length"] == n and m["success"] == 1.0 and m["seed"] == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_sampler_state_resumes_the_exact_stream(factory, workers):
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (300, 3, 2)).astype(np.float32)
    with Samplers(factory, "train", 3, workers, run_seed=5) as s:
        s.reset()
        for a in acts[:150]:
            s.step(a)
        state = s.state_dicts()
        rest = [(s.step(a), s.buf.obs.copy(), s.buf.reward.copy())[1:] for a in acts[150:]]
    with Samplers(factory, "train", 3, workers, run_seed=999) as s2:  # the state overrides the seed
        s2.load_state_dicts(state)
        again = [(s2.step(a), s2.buf.obs.copy(), s2.buf.reward.copy())[1:] for a in acts[150:]]
    for (o1, r1), (o2, r2) in zip(rest, again):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


def test_worker_process_and_learner_block_give_the_same_results(factory):
    acts = np.random.default_rng(1).uniform(-1, 1, (200, 4, 2)).astype(np.float32)
    out = []
    for workers in (0, 1, 3):
        with Samplers(factory, "train", 4, workers, run_seed=3) as s:
            s.reset()
            obs = []
            for a in acts:
                s.step(a)
                obs.append(s.buf.obs.copy())
            out.append(obs)
    np.testing.assert_array_equal(np.array(out[0]), np.array(out[1]))
    np.testing.assert_array_equal(np.array(out[0]), np.array(out[2]))


def test_a_dead_worker_is_named_within_seconds(factory):
    with Samplers(factory, "train", 4, 1, run_seed=0, timeout_s=60) as s:
        s.reset()
        os.kill(s.procs[0].pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(SamplerError, match=r"sampler worker 0 .*died with exit code -9"):
            for _ in range(100):
                s.step(np.zeros((4, 2), np.float32))
        assert time.monotonic() - t0 < 5


def test_a_stopped_worker_is_named_after_the_machines_timeout_and_closed_at_once(factory):
    timeout_s = Machine(worker_timeout_s=1.5).worker_timeout_s  # machine.worker_timeout_s reaches the samplers
    s = factory.train_samplers(4, 1, run_seed=0, timeout_s=timeout_s)
    s.reset()
    os.kill(s.procs[0].pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(SamplerError, match=r"sampler worker 0 \(pid \d+, samplers 0..1\) sent nothing for 1.5 s "
                                           r"\(its process is stopped"):
        for _ in range(100):
            s.step(np.zeros((4, 2), np.float32))
    assert time.monotonic() - t0 < 5
    proc = s.procs[0]
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 2 and not proc.is_alive()


class ExplodingFactory(GymTaskFactory):
    """Sampler 0's env raises on its 5th step."""

    def make(self, mode, index, run_seed, render=False):
        sampler = super().make(mode, index, run_seed, render)
        if index == 0:
            step, calls = sampler.step, []

            def exploding_step(action):
                calls.append(1)
                if len(calls) == 5:
                    raise RuntimeError("env exploded")
                return step(action)

            sampler.step = exploding_step
        return sampler


def test_a_failing_env_reports_the_worker_traceback():
    with Samplers(ExplodingFactory(), "train", 2, 1, run_seed=0) as s:
        s.reset()
        with pytest.raises(SamplerError, match=r"(?s)sampler worker 0 .*failed.*RuntimeError: env exploded"):
            for _ in range(10):
                s.step(np.zeros((2, 2), np.float32))
