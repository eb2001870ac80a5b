"""The test video's grid: frames wider than a tile are downscaled by an integer factor, narrower ones kept;
MuJoCo renders at the tile's size."""

import numpy as np
import pytest

from envs.task import MUJOCO_RENDER_SIZE, make_env
from rl_core.eval.video import GridClip


@pytest.mark.parametrize("width, height, tile", [(600, 400, (200, 300)), (240, 240, (240, 240)), (960, 480, (160, 320))])
def test_a_tile_is_the_frame_downscaled_to_at_most_300_px_wide(width, height, tile):
    clip = GridClip(["a", "b", "c"], max_frames=5)
    frames = [np.full((height, width, 3), 50 * i, np.uint8) for i in range(3)]
    clip.add(frames)
    clip.add([frames[0], None, frames[2]])  # the second episode ended: its last frame held
    assert len(clip.frames) == 2 and clip.frames[0].shape == (tile[0], 3 * tile[1], 3)
    assert np.all(clip.frames[1][20:, tile[1] + 60:2 * tile[1]] != 50)  # greyed (label corner aside)


@pytest.mark.slow  # Mesa's EGL: make test installs it (scripts/gl_libs.sh), make test-fast does not
def test_mujoco_renders_its_video_frames_at_the_tile_size():
    env = make_env("HalfCheetah-v5", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (MUJOCO_RENDER_SIZE, MUJOCO_RENDER_SIZE, 3) and frame.std() > 10  # a picture, not a blank
    env.close()
