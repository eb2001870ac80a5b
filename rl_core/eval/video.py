"""Clips of test episodes: a labelled grid of episodes, written as mp4 and as a TensorBoard GIF."""

from __future__ import annotations

import io
import math
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw


TILE_WIDTH = 300  # px: a frame wider than this is shown downscaled by an integer factor (LunarLander's 600 by 2)


def _tile(frame: np.ndarray, label: str, finished: bool, scale: int | None) -> np.ndarray:
    scale = scale or max(1, frame.shape[1] // TILE_WIDTH)
    img = Image.fromarray(frame[::scale, ::scale])
    if finished:  # hold the last frame, greyed, until the clip ends
        img = Image.blend(img.convert("L").convert("RGB"), Image.new("RGB", img.size, (128, 128, 128)), 0.3)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 8 + 7 * len(label), 16], fill=(0, 0, 0))
    draw.text((4, 3), label, fill=(255, 255, 255))
    return np.asarray(img)


class GridClip:
    """Collects frames of up to ``E`` episodes that play side by side; frame ``i`` of the clip
    tiles frame ``i`` of each episode (``cols`` per row), each labelled, a finished one greyed.

    Frames are ``[H, W, 3]`` uint8; tiles are downscaled by ``scale`` (None: to at most ``TILE_WIDTH`` wide).
    """

    def __init__(self, labels: list[str], max_frames: int, scale: int | None = None, cols: int = 4) -> None:
        self.labels, self.max_frames, self.scale = labels, max_frames, scale
        self.cols = min(cols, len(labels))
        self.rows = math.ceil(len(labels) / self.cols)
        self.last: list[np.ndarray | None] = [None] * len(labels)
        self.frames: list[np.ndarray] = []

    @property
    def full(self) -> bool:
        return len(self.frames) >= self.max_frames

    def add(self, frames: list[np.ndarray | None]) -> None:
        """One frame per episode (``None`` once it finished: its last frame is held, greyed)."""
        if self.full:
            return
        tiles = []
        for i, frame in enumerate(frames):
            if frame is not None:
                self.last[i] = frame
            tiles.append(_tile(self.last[i], self.labels[i], frame is None, self.scale))
        h, w, _ = tiles[0].shape
        grid = np.zeros((self.rows * h, self.cols * w, 3), np.uint8)
        for i, tile in enumerate(tiles):
            r, c = divmod(i, self.cols)
            grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
        self.frames.append(grid)

    def write_mp4(self, path: Path, fps: int) -> Path:
        """H.264 mp4 (the ffmpeg binary ships inside the imageio-ffmpeg wheel)."""
        with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=2,
                                ffmpeg_log_level="error") as writer:
            for frame in self.frames:
                writer.append_data(frame)
        return path

    def gif_bytes(self, fps: int, every: int = 2, scale: int = 2) -> bytes:
        """A smaller GIF of the clip (every ``every``-th frame, downscaled) for TensorBoard's image tab."""
        buf = io.BytesIO()
        frames = [Image.fromarray(f[::scale, ::scale]) for f in self.frames[::every]]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(1000 * every / fps), loop=0)
        return buf.getvalue()
