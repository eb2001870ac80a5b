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
        for k in self.data:
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
        for k in self.data:
            self.data[k][slots] = rows[k][skip:].to(self.device)


class IndexedReplayBuffer(ReplayBuffer):
    """``algo.optimize_memory_usage``: each observation stored once. A row's next observation is the obs of the
    same sampler's next row (``N`` rows on, ``N`` samplers); only where an episode ended (its next row starts a
    new episode) is the final observation kept apart, in ``final`` ``[F, D]``, a ring that doubles when
    episodes are too short for it. The newest ``N`` rows wait for their next row and are not sampled, so a run
    draws other batches than with the plain buffer. Per row: obs, actions, rewards, terminated and an int64
    slot (``8 + 4·(D + A + 2)`` bytes against ``4·(2D + A + 2)``), plus ``4·D`` per ended episode."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device, samplers: int) -> None:
        if capacity <= samplers:
            raise ValueError(f"buffer_size: must exceed machine.num_samplers ({samplers}) with optimize_memory_usage, "
                             f"got {capacity}")
        super().__init__(capacity, obs_dim, action_dim, device)
        del self.data["next_obs"]
        self.samplers = samplers
        self.final_of = torch.full((capacity,), -1, dtype=torch.int64, device=device)  # per slot: its final's number
        self.final = torch.zeros((max(16, capacity // 64), obs_dim), dtype=torch.float32, device=device)
        self.final_row = [-1] * self.final.shape[0]  # per final slot: the global row it belongs to
        self.finals = 0  # final observations ever kept

    @property
    def row_bytes(self) -> int:
        return sum(t[0].numel() * 4 for t in self.data.values()) + 8

    def _keep_final(self, row: int, obs: torch.Tensor, held_from: int) -> int:
        """Keep row ``row``'s final observation; returns its number (its slot: number % F)."""
        size = self.final.shape[0]
        if self.final_row[self.finals % size] >= max(held_from, 0):  # full of held rows' finals: double it
            grown = torch.zeros((2 * size, self.final.shape[1]), dtype=torch.float32, device=self.device)
            rows = [-1] * (2 * size)
            for k in range(max(0, self.finals - size), self.finals):
                grown[k % (2 * size)], rows[k % (2 * size)] = self.final[k % size], self.final_row[k % size]
            self.final, self.final_row, size = grown, rows, 2 * size
        k = self.finals
        self.final[k % size], self.final_row[k % size] = obs.to(self.device), row
        self.finals += 1
        return k

    def add(self, **rows: torch.Tensor) -> None:
        """As :meth:`ReplayBuffer.add`, with ``ended`` ``[N]`` (bool, CPU: terminated or truncated) naming the
        rows whose ``next_obs`` is a final observation; the other rows' next_obs is the next row's obs."""
        n = rows["rewards"].shape[0]
        numbers = torch.full((n,), -1, dtype=torch.int64)
        for i in torch.nonzero(rows["ended"]).flatten().tolist():
            numbers[i] = self._keep_final(self.added + i, rows["next_obs"][i], self.added + n - self.capacity)
        self.final_of[self._slots(self.added, n)] = numbers.to(self.device)
        super().add(**rows)

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The transitions of global rows ``rows`` ``[B]`` (on the buffer's device), next_obs rebuilt."""
        slots = rows % self.capacity
        out = {k: v[slots] for k, v in self.data.items()}
        number = self.final_of[slots]
        final = self.final[number.clamp(min=0) % self.final.shape[0]]
        out["next_obs"] = torch.where((number >= 0)[:, None], final, self.data["obs"][(rows + self.samplers) % self.capacity])
        return out

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` rows drawn uniformly with replacement from the held rows whose next row is held too."""
        held = len(self)
        if held <= self.samplers:
            raise ValueError(f"the buffer holds {held} rows: nothing to sample until one step more than the samplers")
        r = torch.randint(held - self.samplers, (batch_size,), generator=generator, device=self.device)
        return self.batch(r + (self.added - held))

    def rows(self, start: int, end: int) -> dict[str, torch.Tensor]:
        """As :meth:`ReplayBuffer.rows`; ``ended`` ``[n]`` and the final observations of those rows instead of next_obs."""
        out = super().rows(start, end)
        number = self.final_of[self._slots(start, end - start)].cpu()
        ended = number >= 0
        out["ended"] = ended
        out["final_obs"] = self.final[number[ended].to(self.device) % self.final.shape[0]].to("cpu", copy=True)
        return out

    def put_rows(self, start: int, rows: dict[str, torch.Tensor]) -> None:
        super().put_rows(start, rows)
        n = rows["rewards"].shape[0]
        skip = max(0, n - self.capacity)
        slots = self._slots(start + skip, n - skip)
        numbers, finals = torch.full((n,), -1, dtype=torch.int64), iter(rows["final_obs"])
        for i in torch.nonzero(rows["ended"]).flatten().tolist():
            obs = next(finals)
            if i >= skip:
                numbers[i] = self._keep_final(start + i, obs, start + n - self.capacity)
        self.final_of[slots] = numbers[skip:].to(self.device)
        self.added = start + n
