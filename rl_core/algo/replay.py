"""The replay buffer: preallocated float32 rings on the training device, sampled with the run's generator.

Rows are numbered globally in the order they were added (``N`` samplers add ``N`` rows an env step); row ``g``
lives at ``g % capacity``. Its contents, ``added`` and the sampling generator (the algorithm's) are the run's
state: ``rows`` / ``put_rows`` move any stretch of rows to and from the checkpoint's segment files.
"""

from __future__ import annotations

import torch

FIELDS = ("obs", "actions", "rewards", "terminated", "next_obs")


class ReplayBuffer:
    """``capacity`` transitions: obs ``[C, D]``, actions ``[C, A]`` (in [-1, 1]), rewards ``[C]``, terminated
    ``[C]`` (1.0 where the episode ended in a terminal state: no bootstrap; a time limit is not terminal)
    and next_obs ``[C, D]`` (the final observation where an episode ended)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device) -> None:
        if capacity < 1:
            raise ValueError(f"buffer_size: must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, device
        shapes = {"obs": (obs_dim,), "actions": (action_dim,), "rewards": (), "terminated": (), "next_obs": (obs_dim,)}
        self.data = {k: torch.zeros((capacity, *shapes[k]), dtype=torch.float32, device=device) for k in FIELDS}
        self.added = 0  # rows ever added

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    @property
    def row_bytes(self) -> int:
        return sum(t[0].numel() * 4 for t in self.data.values())

    def _slots(self, start: int, n: int) -> torch.Tensor | slice:
        pos = start % self.capacity
        if pos + n <= self.capacity:
            return slice(pos, pos + n)
        return (torch.arange(n, device=self.device) + pos) % self.capacity

    def add(self, **rows: torch.Tensor) -> None:
        """One env step of ``N`` samplers: each field ``[N, ...]``, on any device."""
        n = rows["rewards"].shape[0]
        slots = self._slots(self.added, n)
        for k in FIELDS:
            self.data[k][slots] = rows[k]
        self.added += n

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` rows drawn uniformly with replacement from the filled part."""
        idx = torch.randint(len(self), (batch_size,), generator=generator, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def rows(self, start: int, end: int) -> dict[str, torch.Tensor]:
        """Global rows ``[start, end)`` on the CPU; they must still be held (within the last ``capacity``)."""
        if start < self.added - self.capacity or end > self.added or start > end:
            raise ValueError(f"rows [{start}, {end}) are not held: the buffer holds [{max(self.added - self.capacity, 0)}, "
                             f"{self.added})")
        slots = self._slots(start, end - start)
        return {k: v[slots].to("cpu", copy=True) for k, v in self.data.items()}  # a copy: a view would save the whole ring

    def put_rows(self, start: int, rows: dict[str, torch.Tensor]) -> None:
        """Write global rows ``start …`` back (a resume); rows older than the ring's span are skipped."""
        n = rows["rewards"].shape[0]
        skip = max(0, n - self.capacity)
        slots = self._slots(start + skip, n - skip)
        for k in FIELDS:
            self.data[k][slots] = rows[k][skip:].to(self.device)
