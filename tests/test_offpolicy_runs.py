"""SAC and TD3 through launch.py: killed with SIGKILL and resumed, a run ends bit-identical to an uninterrupted
one (weights, targets, optimizers, alpha, the replay buffer); test mode plays a checkpoint with a video; settings
that do not apply are refused in one line."""

import json
import signal

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from rl_core.algo.replay import IndexedReplayBuffer, ReplayBuffer
from rl_core.replay_files import ReplayFiles
from tests.conftest import kill_at_checkpoint, stop_after_first_checkpoint

TINY = ["env=pendulum", "machine.num_samplers=2", "model.hidden_sizes=[32,32]", "algo.batch_size=32",
        "algo.learning_starts=200", "algo.buffer_size=500", "pipeline.stages.0.max_stage_steps=1200",
        "pipeline.save_interval=400", "pipeline.metric_accumulate_interval=200",
        "env.valid_episodes_per_sampler=1", "env.heldout_episodes_per_sampler=2"]


def _buffer(run, ckpt):
    state = torch.load(ckpt, weights_only=True)
    buf = (IndexedReplayBuffer(state["replay"]["capacity"], 3, 1, torch.device("cpu"), 2) if state["replay"]["indexed"]
           else ReplayBuffer(state["replay"]["capacity"], 3, 1, torch.device("cpu")))
    ReplayFiles(run / "checkpoints").load(buf, state["replay"], ckpt)
    return state, buf


@pytest.mark.slow
@pytest.mark.parametrize("algo, extra", [("sac", []), ("td3", []), ("sac", ["algo.optimize_memory_usage=true"])],
                         ids=["sac", "td3", "sac-next-obs-by-index"])
def test_killed_and_resumed_run_ends_bit_identical(launch_here, tmp_path, algo, extra):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert launch_here(f"algo={algo}", *TINY, *extra, f"run_dir={whole}").returncode == 0
    left = kill_at_checkpoint("algo=" + algo, *TINY, *extra, f"run_dir={cut}",
                              checkpoint=cut / "checkpoints" / "ckpt_0000000800.pt")
    assert left[-1] == 800 and not (cut / "DONE").exists()
    resumed = launch_here(f"algo={algo}", *TINY, *extra, f"run_dir={cut}", "resume=true")
    assert resumed.returncode == 0 and "at step 800" in resumed.stderr, resumed.stderr[-3000:]
    a, buf_a = _buffer(whole, whole / "checkpoints" / "ckpt_0000001200.pt")
    b, buf_b = _buffer(cut, cut / "checkpoints" / "ckpt_0000001200.pt")
    for part in ("model", "target"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert torch.equal(a["generator"], b["generator"])
    assert a["offpolicy"]["updates"] == b["offpolicy"]["updates"] == 1200 // 2 - 200 // 2 + 1
    if algo == "sac":
        assert torch.equal(a["offpolicy"]["log_alpha"], b["offpolicy"]["log_alpha"])
        assert a["offpolicy"]["log_alpha"].item() != 0.0  # alpha was tuned
    for k in a["optimizer"]:
        sa, sb = a["optimizer"][k]["state"], b["optimizer"][k]["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert buf_a.added == 1200 and all(torch.equal(buf_a.data[k], buf_b.data[k]) for k in buf_a.data)
    if extra:  # next_obs by index: every held transition rebuilt the same, final observations included
        rows = torch.arange(1200 - 500, 1200 - 2)
        ta, tb = buf_a.batch(rows), buf_b.batch(rows)
        assert all(torch.equal(ta[k], tb[k]) for k in ta) and type(buf_a).__name__ == "IndexedReplayBuffer"
    # each checkpoint wrote only its new rows: segments of 400, then of the 400 since (the ring holds 500)
    assert [s[:2] for s in a["replay"]["segments"]] == [[400, 800], [800, 1200]]
    valid = [json.loads(line) for line in (whole / "valid.json").read_text().splitlines()]
    resumed_valid = [json.loads(line) for line in (cut / "valid.json").read_text().splitlines()]
    assert [v["reward"] for v in valid] == [v["reward"] for v in resumed_valid][-len(valid):]


@pytest.mark.slow
def test_a_signal_saves_off_schedule_and_the_resumed_sac_run_ends_bit_identical(launch_here, tmp_path):
    # SIGUSR2 (SLURM's warning before preemption; submitit requeues on it): a save between checkpoints, with
    # the buffer's rows up to there; the resumed run keeps the schedule and ends as the uninterrupted one
    long = [*TINY, "pipeline.stages.0.max_stage_steps=4000"]
    whole = tmp_path / "whole"
    assert launch_here("algo=sac", *long, f"run_dir={whole}").returncode == 0
    for attempt, delay in enumerate((0.0, 0.3, 0.6)):
        # a signal that lands before the loop leaves the checkpoint's own step saves on the schedule: send it later
        cut = tmp_path / f"cut{attempt}"
        proc = stop_after_first_checkpoint("algo=sac", *long, f"run_dir={cut}", run_dir=cut, signum=signal.SIGUSR2,
                                           delay=delay)
        assert proc.returncode == 3, proc.stdout[-3000:]
        stopped = max(int(p.stem.split("_")[1]) for p in (cut / "checkpoints").glob("ckpt_*.pt"))
        if stopped % 400 != 0:
            break
    assert 400 < stopped < 4000 and stopped % 400 != 0  # off the schedule: the step the signal came at
    assert launch_here("algo=sac", *long, f"run_dir={cut}", "resume=true").returncode == 0
    a, buf_a = _buffer(whole, whole / "checkpoints" / "ckpt_0000004000.pt")
    b, buf_b = _buffer(cut, cut / "checkpoints" / "ckpt_0000004000.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["offpolicy"]["log_alpha"], b["offpolicy"]["log_alpha"])
    assert all(torch.equal(buf_a.data[k], buf_b.data[k]) for k in buf_a.data)
    steps = [[json.loads(line)["training_steps"] for line in (d / "valid.json").read_text().splitlines()] for d in (whole, cut)]
    assert steps[0] == steps[1] == list(range(400, 4001, 400))


@pytest.mark.slow
def test_test_mode_and_init_weights_read_a_sac_checkpoint_without_its_buffer(launch_here, tmp_path):
    run = tmp_path / "run"
    assert launch_here("algo=sac", *TINY, f"run_dir={run}").returncode == 0
    for seg in (run / "checkpoints").glob("replay_*.pt"):
        seg.unlink()  # test mode reads the weights alone
    proc = launch_here("mode=test", f"run_dir={run}", "test.select=steps", "test.steps=[1200]", "env.test_episodes_per_sampler=2",
                       "test.video_max_frames=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next((run / "test").glob("*/test.json")).read_text())[-1]
    assert result["training_steps"] == 1200 and result["num_tasks_evaled"] == 2
    frames = np.stack(imageio.mimread(result["video"], memtest=False))
    assert frames.shape[0] == result["video_frames"] == 30
    # checkpoint=FILE starts a new run from its weights alone (no buffer), its targets from them too: with no
    # update yet (learning_starts past the run's end) the new run's targets are the old run's online weights
    source = torch.load(run / "checkpoints" / "ckpt_0000001200.pt", weights_only=True)["model"]
    fresh = tmp_path / "fresh"
    proc = launch_here("algo=sac", *TINY, f"run_dir={fresh}", f"checkpoint={run / 'checkpoints' / 'ckpt_0000001200.pt'}",
                       "algo.learning_starts=5000", "pipeline.stages.0.max_stage_steps=400")
    assert proc.returncode == 0, proc.stderr[-3000:]
    target = torch.load(fresh / "checkpoints" / "ckpt_0000000400.pt", weights_only=True)["target"]
    assert target.keys() == source.keys() and all(torch.equal(target[k], source[k]) for k in source)


@pytest.mark.parametrize("args,fragments", [
    (["algo=sac", "+pipeline.update_repeats=3"], ["pipeline.update_repeats: a PPO setting that SAC does not use"]),
    (["algo=td3", "+pipeline.stages.0.num_steps=10"], ["pipeline.stages[0].num_steps: a PPO setting that TD3"]),
    (["algo=sac", "model=memoryless_actor_critic"], ["model: SAC needs a QActorCritic with actor=squashed_gaussian"]),
    (["algo=td3", "model=sac_mlp"], ["model: TD3 needs a QActorCritic with actor=deterministic", "got QActorCritic"]),
    (["algo=sac", "env.action_handling=clip"], ["env.action_handling: SAC acts in [-1, 1]", "rescale"]),
    (["algo=sac", "machine.compile=true"], ["machine.compile: compiles PPO's loss"]),
    (["algo=sac", "algo.batch_size=0"], ["algo.batch_size: must be >= 1"]),
])
def test_settings_that_do_not_apply_are_refused(launch_here, tmp_path, args, fragments):
    proc = launch_here("env=pendulum", *args, f"run_dir={tmp_path}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    for f in fragments:
        assert f in out, out[-3000:]


@pytest.mark.slow
def test_observation_statistics_fold_in_every_collected_step_and_none_of_evaluation(launch_here, tmp_path):
    # 2 samplers x 600 steps, validated at 3 checkpoints (600 more env steps) and held out at the end: only the
    # 1,200 collected observations count, so evaluation saw frozen statistics
    run = tmp_path / "run"
    assert launch_here("algo=sac", *TINY, "algo.buffer_size=2000", "model.normalize_obs=true", f"run_dir={run}").returncode == 0
    state, buf = _buffer(run, run / "checkpoints" / "ckpt_0000001200.pt")
    count, mean = state["model"]["obs_norm.stats.count"].item(), state["model"]["obs_norm.stats.mean"]
    assert count == pytest.approx(1200 + 1e-4)
    # the statistics hold obs 1..600 of each sampler, the buffer obs 0..599: all but 2 of 1,200 rows shared
    assert len(buf) == 1200 and torch.allclose(mean.float(), buf.data["obs"][:1200].mean(0), atol=2 * 8 / 1200)
