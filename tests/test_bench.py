"""The bench's arithmetic: the update's FLOP count and the time-to-solve records (figures by hand)."""

import importlib.util
import json
import math

import numpy as np
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_step_gflop_counts_forward_weight_and_input_gradients():
    # Default model, hidden (64, 32), obs 8, actions 2, value 1. Per sample, 2·in·out per matmul:
    # first layers forward + weight grad (no input grad): 2·8·64·2 each; the others 3 matmuls.
    per_sample = 2 * (2 * 8 * 64 * 2) + 3 * 2 * (64 * 32 + 32 * 2) + 3 * 2 * (64 * 32 + 32 * 1)
    assert per_sample == 29248
    assert bench.step_gflop(16000) == pytest.approx(16000 * per_sample / 1e9)


def test_step_matmuls_run_at_the_shapes_they_count():
    # Per Linear (in, out) on B samples: forward (B, out), weight gradient (out, in), input gradient (B, in)
    # but for the first layers; each 2·B·in·out FLOP.
    b, expected = 100, []
    for head in (2, 1):
        for i, (n_in, n_out) in enumerate([(8, 64), (64, 32), (32, head)]):
            shapes = [(b, n_out), (n_out, n_in)] + ([(b, n_in)] if i else [])
            expected += [(2 * b * n_in * n_out, shape) for shape in shapes]
    timed = [(flop, tuple(product().shape)) for flop, product in bench.step_matmuls(b)]
    assert sorted(timed) == sorted(expected) and len(timed) == 16


def test_solve_record_takes_the_first_eval_reaching_200_and_adds_the_start_up():
    evals = [{"training_steps": 25000, "wall_s": 4.0, "reward": -50.0},
             {"training_steps": 50000, "wall_s": 8.0, "reward": 210.0},
             {"training_steps": 75000, "wall_s": 12.0, "reward": 250.0}]
    run = bench.solve_record(3, wall=15.0, evals=evals)  # 3 s of the process came before training
    assert run["solved"] and run["env_steps"] == 50000
    assert run["train_wall_s"] == 8.0 and run["process_wall_s"] == 11.0
    assert run["curve"] == [(4.0, -50.0), (8.0, 210.0), (12.0, 250.0)]
    never = bench.solve_record(4, wall=10.0, evals=evals[:1])
    assert not never["solved"] and never["env_steps"] is None


def test_solve_summary_counts_an_unsolved_seed_as_infinite():
    runs = [{"solved": True, "env_steps": 100, "process_wall_s": 10.0, "train_wall_s": 8.0},
            {"solved": False, "env_steps": None, "process_wall_s": None, "train_wall_s": None},
            {"solved": True, "env_steps": 300, "process_wall_s": 30.0, "train_wall_s": 25.0}]
    s = bench.solve_summary(runs)
    assert s["solved"] == "2/3"
    assert s["median_env_steps"] == 300 and s["median_process_wall_s"] == 30.0
    assert math.isinf(bench.solve_summary(runs[1:2] * 3)["median_env_steps"])


def test_solve_record_reads_the_heldout_score_at_the_solve_and_the_robust_solve():
    evals = [{"training_steps": 25000, "wall_s": 4.0, "reward": 205.0,
              "heldout": {"reward": 150.0, "wall_s": 6.0}},
             {"training_steps": 50000, "wall_s": 10.0, "reward": 190.0},
             {"training_steps": 75000, "wall_s": 14.0, "reward": 240.0,
              "heldout": {"reward": 230.0, "wall_s": 17.0}}]
    run = bench.solve_record(1, wall=20.0, evals=evals)  # 3 s of start-up: the last held-out check ended at 17
    assert run["env_steps"] == 25000 and run["process_wall_s"] == 7.0 and run["heldout_at_solve"] == 150.0
    assert run["robust"] and run["robust_env_steps"] == 75000 and run["robust_process_wall_s"] == 20.0


def test_wilson_interval_by_hand():
    # 16/16: p = 1, z² = 3.8416: centre (1 + 0.12005) / 1.2401 = 0.90319, half 1.96·sqrt(3.8416/1024)/1.2401 = 0.09681
    assert bench.wilson(16, 16) == (0.806, 1.0)
    # 8/16: p = 0.5: centre 0.5, half 1.96·sqrt(0.015625 + 0.00375156)/1.2401 = 0.21998
    assert bench.wilson(8, 16) == (0.28, 0.72)
    s = bench.solve_summary([{"solved": True, "env_steps": 1, "process_wall_s": 1.0, "train_wall_s": 1.0,
                              "heldout_at_solve": 210.0, "robust": True, "robust_env_steps": 2,
                              "robust_process_wall_s": 3.0}] * 15 + [{"solved": False, "env_steps": None,
                                                                      "process_wall_s": None, "train_wall_s": None}])
    assert s["solved"] == "15/16" and s["robust"] == "15/16" and s["solved_ci"] == bench.wilson(15, 16)
    assert s["median_robust_env_steps"] == 2 and s["median_heldout_at_solve"] == 210.0


def test_scaling_model_by_hand():
    model = bench.scaling_model
    # a ring of 4 ranks on one node: 6 latency steps and 6/4 of the bytes; across nodes each step pays the hop
    assert model.allreduce_s(4, 1e-3, 16, 50e-6, 1000.0, 1e6) == pytest.approx(6e-3 + 1.5e-3)
    assert model.allreduce_s(32, 1e-3, 16, 50e-6, 0.0, 1e6) == pytest.approx(62 * 1.05e-3)
    assert model.allreduce_s(1, 1e-3, 16, 50e-6, 1000.0, 1e6) == 0.0
    # no spread, no stragglers: N ranks' steps over collection + update + sync, the cut-off changes nothing
    for q in (None, 0.5):
        rate, fill = model.throughput(4, 2000, 0.2, 0.0, 0.05, 0.01, q, 0.25, 0.0, 1.0, rollouts=10)
        assert rate == pytest.approx(4 * 2000 / 0.26) and fill == pytest.approx(1.0)
    # a cut once 2 of 4 ranks are done: rank times (0.2, 0.4, 0.4, 0.8) cut at 0.4, the slowest has half
    end, fill = model.rollout_end(np.array([[0.2, 0.4, 0.4, 0.8]]), 0.5, 0.25)
    assert end.tolist() == [0.4] and fill.tolist() == [pytest.approx(3.5 / 4)]
    end, fill = model.rollout_end(np.array([[0.2, 0.4, 0.4, 0.8]]), 0.5, 0.75)  # but 75% at least: until 0.6
    assert end.tolist() == [pytest.approx(0.6)] and fill.tolist() == [pytest.approx(3.75 / 4)]
    end, fill = model.rollout_end(np.array([[0.2, 0.4, 0.4, 0.8]]), None, 0.25)  # no cut: the slowest's time
    assert end.tolist() == [0.8] and fill.tolist() == [1.0]


def test_offpolicy_scores_summarise_the_final_heldout_means_over_seeds(tmp_path):
    spec = importlib.util.spec_from_file_location("offpolicy", ROOT / "scripts" / "offpolicy.py")
    offpolicy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(offpolicy)
    finals = {1: -150.0, 2: -140.0, 3: -200.0, 4: -146.0}
    calls = []

    def fake_launch(run_dir, overrides):  # what launch.py leaves: one valid.json line per checkpoint
        calls.append(overrides)
        seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
        run_dir.mkdir(parents=True)
        lines = [{"training_steps": 10000, "reward": -900.0},
                 {"training_steps": 20000, "reward": finals[seed] + 1,
                  "heldout": {"reward": finals[seed], "num_tasks_evaled": 100}}]
        (run_dir / "valid.json").write_text("".join(json.dumps(v) + "\n" for v in lines))
        return 12.0, 0, None

    result = offpolicy.scores(tmp_path, ["pendulum_sac"], [1, 2, 3, 4], fake_launch, ["machine.torch_threads=1"])
    s = result["pendulum_sac"]
    assert [r["heldout_reward"] for r in s["runs"]] == [-150.0, -140.0, -200.0, -146.0]
    assert s["iqm"] == -148.0  # the middle two of four: -150, -146
    assert -200.0 <= s["ci"][0] < -159.0 < s["ci"][1] <= -140.0  # a bootstrap CI of the mean (-159) over the seeds
    assert all("env=pendulum" in c and "experiment=pendulum_sac" in c and "seed=1" in calls[0] for c in calls)
    assert calls[0][-2:] == ["pipeline.stages.0.max_stage_steps=20000", "machine.torch_threads=1"]
    assert "| pendulum_sac | 20,000 | 4 | -148.0 [" in offpolicy.markdown({"scores": result})
    assert "≥ -170: met" in offpolicy.markdown({"scores": result})
