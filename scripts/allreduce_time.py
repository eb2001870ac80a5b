"""Milliseconds per ``all_reduce`` of the default model's gradients (one flat float32 tensor) over gloo on
loopback: what DD-PPO adds to each gradient step. Run by the bench's ``distributed`` section under
``torchrun --standalone --nproc_per_node=2``; rank 0 prints one JSON line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.actor_critic import MemorylessActorCritic  # noqa: E402


def main(repeats: int = 2000) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    numel = sum(p.numel() for p in MemorylessActorCritic(8, 2).parameters())
    flat = torch.randn(numel)
    for _ in range(100):
        dist.all_reduce(flat)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(flat)
    ms = (time.perf_counter() - t0) / repeats * 1000
    if dist.get_rank() == 0:
        print(json.dumps({"parameters": numel, "ms_per_all_reduce": round(ms, 4), "world": dist.get_world_size()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
