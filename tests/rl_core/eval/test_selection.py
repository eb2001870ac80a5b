"""Checkpoint selection on synthetic checkpoint lists."""

from pathlib import Path

import pytest

from rl_core.eval.selection import TestSelection

# the reference's checkpoints: every 208k steps (13 rollouts of 16k) and the end
FOUND = [(s, Path(f"ckpt_{s:010d}.pt")) for s in (208000, 416000, 624000, 832000, 1040000, 1200000)]


def steps(sel):
    return [s for s, _ in sel.choose(FOUND)]


def test_all_is_the_default():
    assert steps(TestSelection()) == [208000, 416000, 624000, 832000, 1040000, 1200000]


def test_every_kth_plus_the_last():
    assert steps(TestSelection(select="every", every=2)) == [416000, 832000, 1200000]
    assert steps(TestSelection(select="every", every=3)) == [624000, 1200000]
    assert steps(TestSelection(select="every", every=4)) == [832000, 1200000]
    assert steps(TestSelection(select="every", every=10)) == [1200000]


def test_nearest_to_each_multiple():
    # multiples of 500k: 500k → 416k (84k away) beats 624k; 1M → 1040k; 1.5M → 1200k
    assert steps(TestSelection(select="nearest", multiple_of=500000)) == [416000, 1040000, 1200000]


def test_explicit_steps_and_a_selection_that_matches_nothing():
    assert steps(TestSelection(select="steps", steps=[1200000, 208000])) == [208000, 1200000]
    with pytest.raises(ValueError, match=r"steps: no checkpoint at \[300000\]; the run has \[208000"):
        TestSelection(select="steps", steps=[300000]).choose(FOUND)


@pytest.mark.parametrize("kwargs,key", [({"select": "best"}, "select"), ({"select": "every", "every": 0}, "every"),
                                        ({"select": "nearest"}, "multiple_of"), ({"select": "steps"}, "steps"),
                                        ({"video_max_frames": 0}, "video_max_frames")])
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        TestSelection(**kwargs)
