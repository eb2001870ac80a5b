"""Where and how a run executes: samplers, worker processes, device, torch threads (``conf/machine``)."""

from __future__ import annotations

import os

import torch

START_METHODS = ("spawn", "forkserver", "fork")


class Machine:
    """Args:
        num_samplers: training env samplers (reference: 8); a rollout has ``num_steps × num_samplers`` steps.
        num_workers: worker processes stepping training samplers beside the learner; ``0`` steps them
            in the learner process, ``null`` means one per core less the learner's.
        valid_samplers / test_samplers: samplers for evaluation, stepped in the learner process (reference: 1).
        devices: CUDA device indices; empty means CPU (reference). The first one is used.
        torch_threads: intra-op threads for the PPO update; ``null`` means one per core.
        compile: run the update's forward, loss and backward through ``torch.compile`` (fused C++
            kernels; needs a C++ compiler, falls back to eager with a warning). Faster gradient steps on
            smaller batches for seconds of compiling at start-up (figures: docs/performance.md).
        fused_update: PPO's loss and gradients written out by hand for the Gaussian MLP actor-critic
            (``rl_core/algo/fused_ppo.py``) instead of autograd: a third of the ops, for the small
            minibatches where each op's dispatch costs more than its arithmetic. Equal to autograd's
            gradients up to float rounding, so a run draws another curve than without. Not with gSDE.
        start_method: multiprocessing start method for the workers.
        worker_timeout_s: a worker that has not answered one step within this many seconds is reported as
            hung (named, with whether its process is stopped) and the run stops.
        collective_timeout_s: with several ranks (torchrun, SLURM tasks), the longest any rank waits in a
            collective (gradient average, checkpoint): a rank that died or hangs makes the others fail within it.
        sync_frac: with several ranks, DD-PPO's straggler cut-off: once this fraction of the ranks has
            finished its rollout, the others end theirs early and the update uses the rollouts as they are
            (``rl_core.distributed.StragglerCutoff``). ``null``: off, every rank collects its whole rollout.
            A cut depends on timing, so such a run is not reproducible bit for bit.
        min_rollout_frac: the least fraction of its rollout's steps a rank collects before a cut.
    """

    def __init__(self, num_samplers: int = 8, num_workers: int | None = 0, valid_samplers: int = 1,
                 test_samplers: int = 1, devices: list[int] | None = None, torch_threads: int | None = None,
                 start_method: str = "spawn", compile: bool = False, fused_update: bool = False, worker_timeout_s: float = 30.0,
                 collective_timeout_s: float = 300.0, sync_frac: float | None = None,
                 min_rollout_frac: float = 0.25) -> None:
        for key in ("num_samplers", "valid_samplers", "test_samplers"):
            if locals()[key] < 1:
                raise ValueError(f"{key}: must be >= 1, got {locals()[key]}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0 or null, got {num_workers}")
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads: must be >= 1 or null, got {torch_threads}")
        if worker_timeout_s <= 0:
            raise ValueError(f"worker_timeout_s: must be > 0, got {worker_timeout_s}")
        if collective_timeout_s <= 0:
            raise ValueError(f"collective_timeout_s: must be > 0, got {collective_timeout_s}")
        if sync_frac is not None and not 0 < sync_frac <= 1:
            raise ValueError(f"sync_frac: must be in (0, 1] or null, got {sync_frac}")
        if not 0 < min_rollout_frac <= 1:
            raise ValueError(f"min_rollout_frac: must be in (0, 1], got {min_rollout_frac}")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method: must be one of {START_METHODS}, got {start_method!r}")
        self.devices = list(devices or [])
        if self.devices and not torch.cuda.is_available():
            raise ValueError(f"devices: CUDA device(s) {self.devices} requested but torch sees no CUDA; use [] for CPU")
        if self.devices and max(self.devices) >= torch.cuda.device_count():
            raise ValueError(f"devices: {self.devices} but only {torch.cuda.device_count()} CUDA device(s) exist")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_samplers = num_samplers
        self.num_workers = max(cores - 1, 0) if num_workers is None else num_workers
        self.valid_samplers = valid_samplers
        self.test_samplers = test_samplers
        self.torch_threads = torch_threads or cores
        self.start_method = start_method
        if compile and fused_update:
            raise ValueError("fused_update: writes its own backward, so it cannot run with compile=true; choose one")
        self.compile = compile
        self.fused_update = fused_update
        self.worker_timeout_s = worker_timeout_s
        self.collective_timeout_s = collective_timeout_s
        self.sync_frac = sync_frac
        self.min_rollout_frac = min_rollout_frac

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.devices[0]}") if self.devices else torch.device("cpu")
