"""The envpool backend and the fast preset train through launch.py (tiny step counts)."""

import json

import numpy as np
import pytest

from tests.test_train import TINY

envpool = pytest.importorskip("envpool", reason="the envpool backend needs `pip install -e '.[envpool]'`")


def test_envpool_samplers_keep_the_step_contract():
    """Every step returns an observation to act on: an ended episode is reported once, with its return,
    and its env restarts at once (envpool would otherwise spend the next action on its own reset)."""
    from envs.envpool_backend import EnvPoolSamplers

    s = EnvPoolSamplers("LunarLanderContinuous-v2", 4, run_seed=3)
    obs = s.reset().copy()
    assert obs.shape == (4, 8) and s.buf.active.all()
    rng = np.random.default_rng(0)
    returns = np.zeros(4)
    finished = []
    for _ in range(600):
        ended = s.step(rng.uniform(-1, 1, (4, 2)).astype(np.float32))
        returns += s.buf.reward
        for m in ended:
            assert m["reward"] == pytest.approx(returns[m["sampler"]], rel=1e-5)
            assert s.buf.terminated[m["sampler"]] or s.buf.truncated[m["sampler"]]
            returns[m["sampler"]] = 0.0
        finished += ended
    assert finished, "random actions crash the lander within 600 steps"
    s.close()


@pytest.mark.slow
def test_envpool_backend_trains_and_validates_on_gymnasium(launch_here, tmp_path):
    proc = launch_here(*TINY, f"run_dir={tmp_path}", "env=lunar_lander_continuous_envpool")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 4000
    valid = [json.loads(line) for line in (tmp_path / "valid.json").read_text().splitlines()]
    # validation plays gymnasium's env on the fixed seeds, whatever the training backend
    assert [e["seed"] for e in valid[-1]["episodes"]] == [0, 1, 2]


@pytest.mark.slow
def test_envpool_backend_resumes_at_the_saved_step(launch_here, tmp_path):
    args = [*TINY, f"run_dir={tmp_path}", "env=lunar_lander_continuous_envpool"]
    assert launch_here(*args).returncode == 0
    # the state a kill right after the checkpoint at 1600 leaves behind
    (tmp_path / "DONE").unlink()
    for ckpt in (tmp_path / "checkpoints").glob("ckpt_*.pt"):
        if int(ckpt.stem.split("_")[1]) > 1600:
            ckpt.unlink()
    resumed = launch_here(*args, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 1600" in resumed.stderr
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 4000


def test_unknown_envpool_id_names_the_key(launch_here, tmp_path):
    proc = launch_here(*TINY, f"run_dir={tmp_path}", "env=lunar_lander_continuous_envpool",
                       "env.envpool_id=LunarLanderContinuous-v9")
    assert proc.returncode == 2
    assert "env.envpool_id: envpool does not know 'LunarLanderContinuous-v9'" in proc.stderr


@pytest.mark.slow
def test_fast_preset_on_envpool_trains(launch_here, tmp_path):
    proc = launch_here("experiment=lunar_lander_fast", "env=lunar_lander_continuous_envpool", f"run_dir={tmp_path}",
                       "pipeline.stages.0.max_stage_steps=8192", "pipeline.save_interval=4096")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "DONE").read_text())["total_steps"] == 8192
