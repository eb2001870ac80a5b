"""A test-only straggler: ``tests.slow_env:SlowLunarLander-v0`` is LunarLanderContinuous whose every step
sleeps ``delay_s`` more on rank ``slow_rank`` (``RANK``, as torchrun sets it) and runs at full speed on the
others. The straggler cut-off's test and the bench's ``distributed`` section train on it."""

import os
import time

import gymnasium as gym


class SlowOnRank(gym.Wrapper):
    def __init__(self, env: gym.Env, delay_s: float) -> None:
        super().__init__(env)
        self.delay_s = delay_s

    def step(self, action):
        time.sleep(self.delay_s)
        return self.env.step(action)


def make(delay_s: float = 0.005, slow_rank: int = 1, **kwargs) -> gym.Env:
    env = gym.make("LunarLanderContinuous-v3", **kwargs)
    return SlowOnRank(env, delay_s) if int(os.environ.get("RANK", "0")) == slow_rank else env


gym.register("SlowLunarLander-v0", entry_point=make)
