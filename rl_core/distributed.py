"""One experiment on several learner processes (ranks): DD-PPO's synchronous data parallelism.

Every rank steps its own block of samplers (global indices ``rank·K … rank·K + K − 1``, so their seeds are
those of one process with ``N·K`` samplers), computes its gradients on its own rollout, and the gradients
are averaged with ``all_reduce`` before every optimizer step; advantage and normaliser statistics are
global; :class:`StragglerCutoff` optionally ends slow ranks' rollouts early. Rank 0 alone validates,
checkpoints and logs. The ranks come from the environment torchrun or submitit sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); without them a run is one process and
nothing here does anything.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class RanksFailed(RuntimeError):
    """A collective failed: another rank died, or hangs longer than ``machine.collective_timeout_s``."""


def node_name() -> str:
    """The node this process runs on: SLURM's name for it (``SLURMD_NODENAME``), else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


class Heartbeat:
    """Every rank's sign of life, so that a failed collective names the rank that died and its node.

    A daemon thread bumps this rank's counter in the rendezvous store (``MASTER_ADDR:MASTER_PORT``, served
    by rank 0) every ``interval_s``; :meth:`silent` reads the counters twice, ``2.5 × interval_s`` apart:
    those that did not move belong to dead ranks. Counters, not clocks: the nodes' clocks may differ.
    """

    def __init__(self, rank: int, interval_s: float = 1.0) -> None:
        self.rank, self.interval_s = rank, interval_s
        timeout = datetime.timedelta(seconds=5)  # only for the failure path: an answer, or "rank 0 is gone"
        client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), None, False, timeout)
        self.store = dist.PrefixStore("heartbeat/", client)
        self.store.add(str(rank), 1)
        self._stop = threading.Event()
        threading.Thread(target=self._beat, name="rank-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.store.add(str(self.rank), 1)
            except RuntimeError:  # the store (rank 0) is gone: the failing collective will say so
                return

    def silent(self, world: int) -> list[int] | None:
        """The ranks whose heartbeat stopped; ``None`` when the store itself is unreachable (rank 0 died)."""
        try:
            before = [self.store.add(str(r), 0) for r in range(world)]
            time.sleep(2.5 * self.interval_s)
            after = [self.store.add(str(r), 0) for r in range(world)]
        except RuntimeError:
            return None
        return [r for r in range(world) if r != self.rank and after[r] == before[r]]

    def stop(self) -> None:
        self._stop.set()


class Ranks:
    """This process's place among the ranks of one experiment; ``world == 1`` is a plain run.

    Args:
        rank, world: this process's rank and the number of ranks.
        local_rank: its rank on this node (which GPU it takes).
        device: where the collectives' tensors live (its GPU for nccl, the CPU for gloo).
        timeout_s: how long a collective waits for the other ranks (for the error message).
        nodes: each rank's node name, in rank order (for the error message; this node alone if unknown).
        heartbeat: the ranks' signs of life, which name the dead rank when a collective fails.
    """

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0,
                 device: torch.device = torch.device("cpu"), timeout_s: float = 300.0,
                 nodes: list[str] | None = None, heartbeat: Heartbeat | None = None) -> None:
        self.rank, self.world, self.local_rank, self.device = rank, world, local_rank, device
        self.timeout_s, self.heartbeat = timeout_s, heartbeat
        self.nodes = nodes or [node_name()] * world

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, checkpoints and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def __repr__(self) -> str:
        return f"rank {self.rank} of {self.world}"

    def where(self, rank: int) -> str:
        return f"rank {rank} on {self.nodes[rank]}"

    def _who_failed(self) -> str:
        """Which rank stopped, as far as the heartbeats tell."""
        silent = self.heartbeat.silent(self.world) if self.heartbeat else []
        if silent is None:
            return f"{self.where(0)} (which serves the rendezvous) is unreachable: it died or its node did"
        if silent:
            return (", ".join(self.where(r) for r in silent) + f" gave no heartbeat for {2.5 * self.heartbeat.interval_s:g} s"
                    " (died, stopped, or its node is gone)")
        return "another rank died or hangs"

    @contextlib.contextmanager
    def waiting_for_peers(self, what: str) -> Iterator[None]:
        """Turns the backend's error (a closed connection, a timeout) into one line that says what happened."""
        try:
            yield
        except RuntimeError as e:  # gloo's and nccl's errors are RuntimeErrors
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            reason = re.sub(r"^\[[^\]]*\] ", "", reason)[:120]  # gloo's source position says nothing to a user
            raise RanksFailed(f"{self} on {self.nodes[self.rank]}: {what} failed: {self._who_failed()}; a rank waits "
                              f"machine.collective_timeout_s = {self.timeout_s:g} s; its own log may say why "
                              f"(RUN/rank<r>/launch.log, or the job's log); the backend said: {reason}") from None

    # -- collectives (no-ops for one rank) ------------------------------------------------------------

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace every gradient with its mean over ranks (one flat ``all_reduce``)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        with self.waiting_for_peers("the gradient all_reduce"):
            dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks of a small float64 tensor (returned on the device it came from)."""
        if self.active:
            total = values.to(self.device, copy=True)
            with self.waiting_for_peers("a sum over ranks"):
                dist.all_reduce(total)
            values = total.to(values.device)
        return values

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (a stop request reaches all ranks at the same rollout)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        with self.waiting_for_peers("the stop check"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        with self.waiting_for_peers("a broadcast from rank 0"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others)."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.main else None
        with self.waiting_for_peers("a gather on rank 0"):
            dist.gather_object(obj, out, dst=0)
        return out

    def gather_everywhere(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        with self.waiting_for_peers("an all_gather"):
            dist.all_gather_object(out, obj)
        return out

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's weights and buffers on every rank."""
        if not self.active:
            return
        with self.waiting_for_peers("the broadcast of rank 0's weights"):
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.active:
            with self.waiting_for_peers("a barrier"):
                dist.barrier()

    def close(self) -> None:
        if self.heartbeat:
            self.heartbeat.stop()
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


class StragglerCutoff:
    """DD-PPO's straggler cut-off ("preemption threshold", Wijmans et al. 2020): once ``sync_frac`` of the
    ranks have finished their rollout, the others end theirs early, never before ``min_frac`` of its steps.

    The ranks count finished rollouts in a key-value store of their own (a ``TCPStore`` that rank 0 serves on
    a free port; its cost: docs/design.md, DD-PPO). A rank still collecting asks it at most every ``poll_s``
    seconds, so a fast rollout pays almost nothing for it. Every rank calls the methods in the same order.
    """

    def __init__(self, ranks: Ranks, sync_frac: float, min_frac: float, timeout_s: float,
                 poll_s: float = 0.005) -> None:
        self.ranks, self.min_frac, self.poll_s = ranks, min_frac, poll_s
        self.needed = math.ceil(sync_frac * ranks.world - 1e-9)  # ranks done before the others stop
        timeout = datetime.timedelta(seconds=timeout_s)
        if ranks.main:
            self.store = dist.TCPStore("0.0.0.0", 0, None, True, timeout, wait_for_workers=False)
            address = (socket.gethostname(), self.store.port)
        address = ranks.broadcast_object(address if ranks.main else None)
        if not ranks.main:
            self.store = dist.TCPStore(address[0], address[1], None, False, timeout)
        self.key, self.min_steps, self._next_poll = "", 0, 0.0

    def start(self, rollout: int, num_steps: int) -> None:
        """Rollout number ``rollout`` (the same on every rank) of ``num_steps`` steps begins."""
        if self.ranks.main and rollout > 0:  # every rank is past the previous one (an update came between)
            self.store.delete_key(f"done{rollout - 1}")
        self.key, self.min_steps, self._next_poll = f"done{rollout}", math.ceil(self.min_frac * num_steps), 0.0

    def should_stop(self, steps_done: int) -> bool:
        """Whether to end this rank's rollout after ``steps_done`` steps."""
        if steps_done < self.min_steps:
            return False
        now = time.perf_counter()
        if now < self._next_poll:
            return False
        self._next_poll = now + self.poll_s
        with self.ranks.waiting_for_peers("the straggler count"):
            return self.store.add(self.key, 0) >= self.needed

    def finished(self) -> None:
        """This rank's rollout ended (full or cut)."""
        with self.ranks.waiting_for_peers("the straggler count"):
            self.store.add(self.key, 1)


def _submitit_tasks() -> int:
    """The number of tasks of this submitit job (SLURM ``tasks_per_node × nodes``, or submitit_local's
    ``tasks_per_node``); 1 outside a submitit job."""
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if executor == "slurm":
        return int(os.environ.get("SLURM_NTASKS", "1"))
    if executor == "local":
        return int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    return 1


def end_slurm_job() -> None:
    """Cancel this SLURM job: its ranks have failed, and a task on a node that died is never reported ended,
    so ``srun`` would wait for it until SLURM declares the node down (``SlurmdTimeout``, often 5 minutes)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        log.error("cancelling SLURM job %s: its ranks failed", job)
        subprocess.run(["scancel", job], capture_output=True, timeout=60, check=False)


def process_rank() -> int:
    """This process's rank before the process group is up (torchrun's ``RANK``, or the submitit task's
    global rank): rank 0 alone writes a job's markers, even when a rank fails before training."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if _submitit_tasks() > 1:
        import submitit

        return submitit.JobEnvironment().global_rank
    return 0


def ranks_from_environment(backend: str = "gloo", timeout_s: float = 300.0, devices: list[int] | None = None) -> Ranks:
    """The ranks of this experiment as torchrun or submitit describe them, with the process group up.

    torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*``; in a submitit job of several tasks
    (``hydra.launcher.tasks_per_node``/``nodes``, on SLURM or submitit_local) submitit's
    ``TorchDistributedEnvironment`` exports the same (rank from the task, rendezvous on the first node, a
    port drawn from the job id). ``timeout_s`` bounds every collective: a rank that died or hangs makes the
    others fail within it. With nccl, each rank takes GPU ``devices[local_rank % len(devices)]``.
    """
    if "WORLD_SIZE" not in os.environ and _submitit_tasks() > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if backend == "nccl":  # one GPU per rank, current before the group starts (nccl's objects live there)
        device = torch.device("cuda", (devices or [0])[local_rank % len(devices or [0])])
        torch.cuda.set_device(device)
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    ranks = Ranks(rank, world, local_rank, device, timeout_s)
    ranks.nodes = ranks.gather_everywhere(node_name())
    try:
        ranks.heartbeat = Heartbeat(rank)
    except (KeyError, ValueError, RuntimeError) as e:  # no MASTER_ADDR/PORT store to reach: errors name no rank
        log.warning("distributed: no heartbeat (%s); a failed collective will not say which rank stopped", e)
    log.info("distributed: %s on %s (pid %d; %s, collective timeout %g s)", ranks, ranks.nodes[rank], os.getpid(),
             backend, timeout_s)
    if ranks.main and len(set(ranks.nodes)) > 1:
        log.info("distributed: nodes %s", "; ".join(f"{n}: ranks {', '.join(str(r) for r, m in enumerate(ranks.nodes) if m == n)}"
                                                    for n in dict.fromkeys(ranks.nodes)))
    return ranks
