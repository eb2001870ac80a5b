"""Which checkpoints of a run to test: explicit, simple rules instead of "skip k" arithmetic."""

from __future__ import annotations

from pathlib import Path

SELECTIONS = ("all", "every", "nearest", "steps")
EPISODE_SETS = ("test", "heldout")


class TestSelection:
    """Checkpoint selection for test mode (``conf/test/default.yaml``).

    Args:
        select: ``all``; ``every`` (every ``every``-th checkpoint, plus the last); ``nearest`` (the
            checkpoint nearest to each multiple of ``multiple_of`` env steps); ``steps`` (exactly
            the checkpoints at ``steps``).
        every: k for ``select=every``.
        multiple_of: N for ``select=nearest``.
        steps: env-step counts for ``select=steps``.
        episodes: ``test``, the reference's fixed test seeds (``env.test_episodes_per_sampler`` per sampler),
            or ``heldout``, episodes no validation ever played (``env.heldout_episodes_per_sampler``): what a
            claim that a run solved the task is made on.
        deterministic: act with the action mean (the reference's ``-e``); false samples actions.
        video: record the test episodes into an mp4 per checkpoint and TensorBoard.
        video_max_episodes: episodes tiled into one clip.
        video_max_frames: clip length cap, in frames.
        video_fps: frames per second of the clip.
    """

    __test__ = False  # not a pytest class

    def __init__(self, select: str = "all", every: int = 1, multiple_of: int | None = None,
                 steps: list[int] | None = None, episodes: str = "test", deterministic: bool = True,
                 video: bool = True, video_max_episodes: int = 8, video_max_frames: int = 400,
                 video_fps: int = 30) -> None:
        if select not in SELECTIONS:
            raise ValueError(f"select: must be one of {', '.join(SELECTIONS)}, got {select!r}")
        if episodes not in EPISODE_SETS:
            raise ValueError(f"episodes: must be one of {', '.join(EPISODE_SETS)}, got {episodes!r}")
        if every < 1:
            raise ValueError(f"every: must be >= 1, got {every}")
        if select == "nearest" and (multiple_of is None or multiple_of < 1):
            raise ValueError(f"multiple_of: select=nearest needs a positive step count, got {multiple_of}")
        if select == "steps" and not steps:
            raise ValueError("steps: select=steps needs a list of env-step counts, e.g. steps=[208000,1200000]")
        for key, value in (("video_max_episodes", video_max_episodes), ("video_max_frames", video_max_frames),
                           ("video_fps", video_fps)):
            if value < 1:
                raise ValueError(f"{key}: must be >= 1, got {value}")
        self.select, self.every, self.multiple_of, self.steps = select, every, multiple_of, list(steps or [])
        self.episodes, self.deterministic, self.video = episodes, deterministic, video
        self.video_max_episodes, self.video_max_frames, self.video_fps = video_max_episodes, video_max_frames, video_fps

    def choose(self, found: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
        """The selected ``(env steps, path)`` pairs, oldest first; ``ValueError`` if none match."""
        if not found:
            return []
        if self.select == "all":
            chosen = found
        elif self.select == "every":
            chosen = found[self.every - 1::self.every]
            if found[-1] not in chosen:
                chosen = chosen + [found[-1]]
        elif self.select == "nearest":
            targets = range(self.multiple_of, found[-1][0] + self.multiple_of, self.multiple_of)
            picked = {min(found, key=lambda f: (abs(f[0] - t), f[0])) for t in targets}
            chosen = sorted(picked)
        else:
            by_steps = dict(found)
            missing = [s for s in self.steps if s not in by_steps]
            if missing:
                raise ValueError(f"steps: no checkpoint at {missing}; the run has {[s for s, _ in found]}")
            chosen = sorted((s, by_steps[s]) for s in set(self.steps))
        return chosen
