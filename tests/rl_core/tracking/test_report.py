"""Sweep report statistics on synthetic jobs, against values computed by hand."""

import csv
import json

import numpy as np
import pytest

from rl_core.tracking.report import bootstrap_ci, iqm, write_report


def _job(sweep, num, overrides, curve, status="finished", error=None, heldout=None):
    """A job dir as a training job leaves it: overrides, valid.json (``heldout``: steps -> held-out reward),
    DONE or FAILED."""
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    heldout = heldout or {}
    (d / "valid.json").write_text("".join(
        json.dumps({"training_steps": s, "wall_s": w, "reward": r,
                    **({"heldout": {"reward": heldout[s], "wall_s": w}} if s in heldout else {})}) + "\n"
        for s, r, w in curve))
    if status == "finished":
        (d / "DONE").write_text(json.dumps({"total_steps": curve[-1][0], "reward": curve[-1][1]}))
    elif status == "failed":
        (d / "FAILED").write_text(json.dumps({"error": error}))


def test_iqm_cuts_a_quarter_from_each_end():
    assert iqm([1, 2, 3, 4]) == 2.5                       # cut 1 each end: mean(2, 3)
    assert iqm([10, 1, 7, 3, 100, 5, 2, -50]) == 4.25    # sorted -50 1 2 3 5 7 10 100: mean(2, 3, 5, 7)
    assert iqm([4, 8, 30]) == 14.0                        # n=3: floor(0.75) = 0 cut, the plain mean


def test_bootstrap_ci_of_two_values_spans_them():
    # resampled means of {a, b}: a (p=1/4), (a+b)/2 (p=1/2), b (p=1/4): the 2.5% and 97.5% quantiles are a and b
    assert bootstrap_ci([100.0, 200.0]) == (100.0, 200.0)
    assert bootstrap_ci([42.0, 42.0, 42.0]) == (42.0, 42.0)
    lo, hi = bootstrap_ci(np.arange(20.0))
    assert lo < 9.5 < hi and hi - lo < 10


def test_report_groups_by_overrides_except_seed_with_hand_computed_statistics(tmp_path):
    sweep = tmp_path / "sweep"
    # lr=1e-3: seeds reach 200 at 200k/400k/never; final 250, 210, 150
    _job(sweep, 0, ["seed=1", "pipeline.optimizer.lr=1e-3"], [(100, 50, 10), (200, 220, 20), (300, 250, 30)])
    _job(sweep, 1, ["seed=2", "pipeline.optimizer.lr=1e-3"], [(100, 10, 12), (200, 150, 22), (400, 210, 44)])
    _job(sweep, 2, ["seed=3", "pipeline.optimizer.lr=1e-3"], [(100, -20, 11), (200, 100, 21), (300, 150, 31)])
    # lr=3e-4: two seeds, one finished and one failed before its end
    _job(sweep, 3, ["seed=1", "pipeline.optimizer.lr=3e-4"], [(100, 205, 9), (300, 260, 27)])
    _job(sweep, 4, ["seed=2", "pipeline.optimizer.lr=3e-4"], [(100, 30, 9)], status="failed",
         error="SamplerError: worker 0 died")
    result = write_report(sweep, threshold=200)
    rows = {r["group"]: r for r in result["rows"]}
    assert set(rows) == {"pipeline.optimizer.lr=1e-3", "pipeline.optimizer.lr=3e-4"}
    a = rows["pipeline.optimizer.lr=1e-3"]
    assert (a["seeds"], a["jobs"]) == (3, 3)
    assert a["mean"] == pytest.approx((250 + 210 + 150) / 3)
    assert a["std"] == pytest.approx(np.sqrt(((250 - 610 / 3) ** 2 + (210 - 610 / 3) ** 2 + (150 - 610 / 3) ** 2) / 2))
    assert a["iqm"] == pytest.approx(610 / 3)  # n=3: nothing cut
    assert a["ci_low"] >= 150 and a["ci_high"] <= 250 and a["ci_low"] < a["mean"] < a["ci_high"]
    # steps to 200: 200, 400, never -> median 400; wall: 20, 44, never -> 44
    assert (a["reached"], a["steps_to_threshold"], a["wall_s_to_threshold"]) == (2, 400, 44)
    b = rows["pipeline.optimizer.lr=3e-4"]
    assert (b["seeds"], b["jobs"], b["mean"], b["std"]) == (1, 2, 260, 0.0)
    assert (b["ci_low"], b["ci_high"]) == (260, 260)
    # 1 of 2 seeds reached it: the median of (100, never) is never
    assert b["reached"] == 1 and b["steps_to_threshold"] == float("inf")
    # the failure is listed, with its error
    assert [(j.num, j.status) for j in result["problems"]] == [("4", "failed")]
    md = (sweep / "report.md").read_text()
    assert "SamplerError: worker 0 died" in md and "| `pipeline.optimizer.lr=1e-3` | 3/3 | 203.3 ± 50.3 |" in md
    with open(sweep / "report.csv") as f:
        assert [r["group"] for r in csv.DictReader(f)] == list(rows)
    assert (sweep / "report_curves.png").stat().st_size > 10_000


def test_report_of_unfinished_jobs_lists_them(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["seed=1"], [(100, 10, 5)], status="running")
    result = write_report(sweep, threshold=200)
    assert result["rows"][0]["seeds"] == 0 and np.isnan(result["rows"][0]["mean"])
    assert [j.status for j in result["problems"]] == ["unfinished"]


def test_report_mode_exits_non_zero_when_a_job_failed(launch_here, tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["seed=1"], [(800, -100.0, 1.0), (1600, 50.0, 2.0)])
    ok = launch_here("mode=report", f"sweep_dir={sweep}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    _job(sweep, 1, ["seed=2"], [(800, -90.0, 1.0)], status="failed", error="RuntimeError: boom")
    failed = launch_here("mode=report", f"sweep_dir={sweep}")
    assert failed.returncode == 4 and "Traceback" not in failed.stderr
    assert f"error: 1 job(s) of {sweep} failed (1; listed above and in {sweep / 'report.md'})" in failed.stderr
    assert "| 1 | failed |" in (sweep / "report.md").read_text()


def test_report_gives_the_heldout_score_at_the_first_solve_and_at_the_end(tmp_path):
    sweep = tmp_path / "sweep"
    # seed 1 first validates >= 200 at step 200 (held-out 150 there) and ends at 300 (held-out 230);
    # seed 2 at 100 (held-out 240), ends 300 (210); seed 3 never reaches it, ends with held-out 90
    _job(sweep, 0, ["seed=1"], [(100, 50, 10), (200, 220, 20), (300, 250, 30)], heldout={200: 150, 300: 230})
    _job(sweep, 1, ["seed=2"], [(100, 201, 9), (200, 190, 19), (300, 260, 29)], heldout={100: 240, 300: 210})
    _job(sweep, 2, ["seed=3"], [(100, -20, 11), (300, 150, 31)], heldout={300: 90})
    _job(sweep, 3, ["seed=4"], [(100, 230, 10)], heldout={100: 260}, status="failed", error="killed")
    (row,) = write_report(sweep, threshold=200)["rows"]
    # at first solve: 150, 240 and the failed job's 260 (it did solve): n=3, nothing cut
    assert row["heldout_at_solve_n"] == 3 and row["heldout_at_solve_iqm"] == pytest.approx((150 + 240 + 260) / 3)
    # final: finished jobs only: 230, 210, 90; two of three hold 200
    assert row["heldout_final_n"] == 3 and row["heldout_final_iqm"] == pytest.approx((230 + 210 + 90) / 3)
    assert row["heldout_final_holding"] == 2 and 90 <= row["heldout_final_ci_low"] < row["heldout_final_ci_high"] <= 230
    md = (sweep / "report.md").read_text()
    assert "| held-out at first 200 (IQM) | held-out final (IQM) |" in md and "| 216.7 (n=3) | 176.7 |" in md
