"""The replay buffer in checkpoints: append-only segment files beside them, so a save writes only the rows
added since the last one (never the whole buffer), each file atomically (``save_checkpoint``'s temp + rename).

A checkpoint names the segments that hold its buffer's rows ``[added − capacity, added)``; a resume reads
exactly those. Segments are ``checkpoints/replay_<first row>_<end row>.pt`` (global row numbers, end excluded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rl_core.algo.replay import IndexedReplayBuffer, ReplayBuffer
from rl_core.checkpoint import CheckpointError, save_checkpoint


class ReplayFiles:
    """The segment files of one run's buffer; ``segments`` are ``(start, end, file name)``, oldest first."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.dir = Path(checkpoint_dir)
        self.segments: list[tuple[int, int, str]] = []

    def save(self, buffer: ReplayBuffer) -> dict[str, Any]:
        """Write the rows added since the last save; returns the checkpoint's ``replay`` entry."""
        end = buffer.added
        start = max(self.segments[-1][1] if self.segments else 0, end - buffer.capacity)
        if end > start:
            name = f"replay_{start:012d}_{end:012d}.pt"
            save_checkpoint(buffer.rows(start, end), self.dir / name)
            self.segments.append((start, end, name))
        held = end - buffer.capacity  # rows before this are overwritten in the ring: no checkpoint from now needs them
        needed = [s for s in self.segments if s[1] > held]
        return {"added": end, "capacity": buffer.capacity, "indexed": isinstance(buffer, IndexedReplayBuffer),
                "segments": [list(s) for s in needed]}

    def load(self, buffer: ReplayBuffer, entry: dict[str, Any], source: Path) -> None:
        """Refill ``buffer`` from the segments a checkpoint names; later segments (of a save that was
        interrupted, or of checkpoints after this one) are forgotten and will be written anew."""
        if entry["capacity"] != buffer.capacity:
            raise CheckpointError(f"{source} holds a replay buffer of {entry['capacity']:,} transitions, this run "
                                  f"has algo.buffer_size={buffer.capacity:,}: resume with the size it trained with")
        indexed = isinstance(buffer, IndexedReplayBuffer)
        if entry.get("indexed", False) != indexed:
            raise CheckpointError(f"{source} holds a replay buffer saved with algo.optimize_memory_usage="
                                  f"{str(not indexed).lower()}: resume with the setting it trained with")
        for start, end, name in entry["segments"]:
            path = self.dir / name
            try:
                rows = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise CheckpointError(f"{source} needs the replay segment {path}, which is missing") from None
            except Exception as e:  # a truncated or foreign file
                raise CheckpointError(f"replay segment {path} is unreadable ({type(e).__name__}); {source} "
                                      "cannot be resumed exactly") from e
            buffer.put_rows(start, rows)
        buffer.added = entry["added"]
        self.segments = [tuple(s) for s in entry["segments"]]
