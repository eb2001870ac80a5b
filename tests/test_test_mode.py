"""Test mode on a tiny trained run: JSON, TensorBoard, videos, determinism, bad input."""

import json

import imageio.v2 as imageio
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_bad_input import _assert_one_line_error
from tests.test_train import TINY

pytestmark = pytest.mark.slow  # end-to-end: make test, not make test-fast


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import run_in_process

    run = tmp_path_factory.mktemp("run")
    proc = run_in_process(*TINY, f"run_dir={run}")
    assert proc.returncode == 0, proc.stderr
    return run


def _test_dirs(run):
    return sorted((run / "test").iterdir()) if (run / "test").exists() else []


def _snapshot(run):
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and "test" not in p.relative_to(run).parts}


def test_test_mode_writes_json_tensorboard_and_videos(launch_here, trained):
    before = _snapshot(trained)
    proc = launch_here("mode=test", f"run_dir={trained}", "test.select=every", "test.every=2",
                       "env.test_episodes_per_sampler=5", "test.video_max_frames=60")
    assert proc.returncode == 0, proc.stderr
    assert _snapshot(trained) == before  # the training run's files are untouched
    out = _test_dirs(trained)[-1]
    results = json.loads((out / "test.json").read_text())
    assert [r["training_steps"] for r in results] == [1600, 3200, 4000]
    for r in results:
        assert [e["seed"] for e in r["episodes"]] == [0, 1, 2, 3, 4]
        assert r["num_tasks_evaled"] == 5 and "reward_std" in r
        frames = np.stack(imageio.mimread(r["video"], memtest=False))
        # 5 episodes tiled 4 per row at half size (200x300): 2 rows x 4 columns
        assert frames.shape[1:] == (400, 1200, 3)
        longest = max(e["ep_length"] for e in r["episodes"])
        assert frames.shape[0] == r["video_frames"] == min(60, longest + 1)
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("test/reward")] == [1600, 3200, 4000]
    assert [e.step for e in acc.Scalars("test/num_tasks_evaled")] == [1600, 3200, 4000]
    assert len(acc.Images("test/episode_vid")) == 3
    assert "reward (mean ± std)" in proc.stderr  # the summary table


def test_two_deterministic_tests_agree_and_match_validation(launch_here, trained):
    for _ in range(2):
        proc = launch_here("mode=test", f"run_dir={trained}", "test.select=steps", "test.steps=[4000]", "test.video=false")
        assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "test.json").read_text()) for d in _test_dirs(trained)[-2:])
    assert a[0]["episodes"] == b[0]["episodes"]
    # validation (valid seeds 0..2) and test (test seeds 0..2) play the same tasks with the same weights
    valid = [json.loads(x) for x in (trained / "valid.json").read_text().splitlines()][-1]
    assert [e["reward"] for e in valid["episodes"]] == pytest.approx([e["reward"] for e in a[0]["episodes"]])


def test_heldout_episodes_are_seeds_no_validation_or_test_plays(launch_here, trained):
    proc = launch_here("mode=test", f"run_dir={trained}", "test.select=steps", "test.steps=[4000]",
                       "test.episodes=heldout", "env.heldout_episodes_per_sampler=4", "test.video=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads((_test_dirs(trained)[-1] / "test.json").read_text())
    assert result["episode_set"] == "heldout" and result["num_tasks_evaled"] == 4
    assert [e["seed"] for e in result["episodes"]] == [1_000_000, 1_000_001, 1_000_002, 1_000_003]
    acc = EventAccumulator(str(_test_dirs(trained)[-1] / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("heldout/reward")] == [4000] and "test/reward" not in acc.Tags()["scalars"]
    assert "4 heldout episodes per checkpoint" in proc.stderr


def test_one_checkpoint_file(launch_here, trained):
    proc = launch_here("mode=test", f"checkpoint={trained / 'checkpoints' / 'ckpt_0000000800.pt'}", "test.video=false")
    assert proc.returncode == 0, proc.stderr
    assert [r["training_steps"] for r in json.loads((_test_dirs(trained)[-1] / "test.json").read_text())] == [800]


def test_corrupted_checkpoint_is_named_others_tested_exit_non_zero(launch_here, trained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("test"))
    bad = run / "checkpoints" / "ckpt_0000002400.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = launch_here("mode=test", f"run_dir={run}", "test.video=false")
    _assert_one_line_error(proc, f"checkpoint {bad} is corrupted", "1 of 5 checkpoint(s) could not be tested")
    results = json.loads((_test_dirs(run)[-1] / "test.json").read_text())
    assert [r["training_steps"] for r in results] == [800, 1600, 3200, 4000]
    assert bad.read_bytes() == b"not a checkpoint"


@pytest.mark.parametrize("args,fragments", [
    (["test.select=steps", "test.steps=[123]"], ["test.steps: no checkpoint at [123]; the run has [800, 1600"]),
    (["model.hidden_sizes=[16]", "test.video=false"], ["parameter actor.0.weight has shape (64, 8) in the checkpoint but (16, 8)"]),
])
def test_bad_test_input(launch_here, trained, args, fragments):
    _assert_one_line_error(launch_here("mode=test", f"run_dir={trained}", *args), *fragments)


def test_run_dir_without_checkpoints(launch_here, tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    _assert_one_line_error(launch_here("mode=test", f"run_dir={tmp_path}"),
                           f"no checkpoints in {tmp_path / 'checkpoints'}", "ckpt_<env steps>.pt")
