"""Many small jobs in one allocation: the submitit launchers with ``hydra.launcher.jobs_per_task``.

``jobs_per_task = k`` submits a sweep's jobs k at a time: one SLURM job (or one submitit_local process) runs
k of them at once as child processes, each pinned to its own share of the allocation's cores, so that each
job's ``machine.torch_threads`` and worker count (which follow the cores it sees) come from its share.
``cpus_per_task`` and ``mem_gb`` are then the allocation's, for its k jobs together (say, a whole node).
Each job keeps its own folder, markers, W&B run and result; one that fails does not stop the others.
Preempted (SIGUSR2), every job saves its checkpoint, and only when all have exited is the allocation
requeued, once; requeued, the jobs that had finished are not run again (their results are kept in
``SWEEP/.submitit/packed/``), the others resume. Also: each job of a local ``parallel`` sweep on its own
share of the cores (:func:`job_core_share`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

PREEMPTED_EXIT = 3  # launch.py's exit status after saving on a signal


def core_shares(cores: Sequence[int], k: int) -> list[list[int]]:
    """``cores`` split into ``k`` contiguous shares as even as can be (the first ones larger); a share is never
    empty: with fewer cores than jobs, jobs share cores round-robin."""
    cores = sorted(cores)
    if len(cores) < k:
        return [[cores[i % len(cores)]] for i in range(k)]
    size, extra = divmod(len(cores), k)
    shares, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        shares.append(cores[start:end])
        start = end
    return shares


_ALL_CORES: list[int] = []  # this process's cores before a job of a local sweep took its share


@contextlib.contextmanager
def core_share_of_local_sweep(sweep_dir: Path, slots: int) -> Iterator[list[int]]:
    """A job of ``hydra/launcher=parallel``: pin this process to one of ``slots`` shares of the cores for the
    job's duration. joblib's workers run one job after another and do not say which of the ``n_jobs`` running
    jobs they are, so a job takes the first free share by an exclusive lock on ``SWEEP/.cores/share<i>``."""
    if not _ALL_CORES:
        _ALL_CORES.extend(sorted(os.sched_getaffinity(0)))
    shares = core_shares(_ALL_CORES, max(1, slots))
    lock_dir = sweep_dir / ".cores"
    lock_dir.mkdir(parents=True, exist_ok=True)
    for i, share in enumerate(shares):
        f = open(lock_dir / f"share{i}", "w")  # noqa: SIM115 (held for the job's duration)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        try:
            os.sched_setaffinity(0, share)
            log.info("local sweep: this job runs on cores %s (share %d of %d)", ",".join(map(str, share)), i, len(shares))
            yield share
        finally:
            os.sched_setaffinity(0, _ALL_CORES)
            f.close()  # releases the lock
        return
    yield _ALL_CORES  # more jobs than shares (n_jobs changed mid-sweep): all cores, as before


def job_core_share() -> contextlib.AbstractContextManager:
    """This job's share of the cores when it is one of several a local ``parallel`` (joblib) sweep runs at
    once; otherwise nothing (a packed job is pinned by its allocation's process, any other job sees its
    allocation or the machine)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return contextlib.nullcontext()
    hc = HydraConfig.get()
    if "joblib" not in str(hc.launcher.get("_target_", "")).lower() or int(hc.launcher.get("n_jobs") or 1) <= 1:
        return contextlib.nullcontext()
    return core_share_of_local_sweep(Path(hc.sweep.dir), int(hc.launcher.n_jobs))


class PackedJobFailed(RuntimeError):
    """A packed job's process ended without a result (it exited, or was killed)."""


def _child_preempted(signum: int, frame: Any) -> None:
    """A packed job's last handler for SIGUSR2/SIGTERM: the training saved its checkpoint; exit, and let the
    allocation's process requeue once for all jobs."""
    sys.exit(PREEMPTED_EXIT)


class _PackRunner:
    """What submitit runs in an allocation: the launcher's packs. A callable object with ``checkpoint``, as
    submitit wants of a job it may requeue (a bound method has none, and would not be requeued)."""

    def __init__(self, launcher: Packing) -> None:
        self.launcher = launcher

    def __call__(self, pack: list[tuple]) -> list[JobReturn]:
        return self.launcher.run_pack(pack)

    def checkpoint(self, pack: list[tuple]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, pack)


class Packing:
    """What the packed launchers add to submitit's: ``jobs_per_task`` jobs per submitted task."""

    jobs_per_task: int

    def take_packing_params(self) -> None:
        self.jobs_per_task = int(self.params.pop("jobs_per_task", 1) or 1)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        k = self.jobs_per_task
        if k == 1:
            return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        import submitit

        assert self.config is not None
        params = dict(self.params)  # jobs_per_task with several nodes or tasks: refused by LauncherCheck
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=params.pop("submitit_folder"),
                                         **{f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")}
                                         if "max_num_timeout" in params else {})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{x if x in base else f"{self._EXECUTOR}_{x}": y for x, y in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            jobs.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        packs = [jobs[i:i + k] for i in range(0, len(jobs), k)]
        log.info("packed: %d jobs in %d allocations of up to %d jobs, %d CPUs each", len(jobs), len(packs), k,
                 params["cpus_per_task"])
        submitted = executor.map_array(_PackRunner(self), packs)
        return [ret for pack in submitted for ret in pack.results()[0]]

    def run_pack(self, pack: list[tuple]) -> list[JobReturn]:
        """Inside the allocation: run ``pack``'s jobs at once, each in a child process on its share of the
        cores; their results in order. Called by submitit, again after a requeue."""
        assert self.config is not None
        # as launch.py does: the launcher YAML's schema matching is intended (rl_core.packing's schemas)
        warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema", category=UserWarning)
        results_dir = Path(str(self.config.hydra.sweep.dir)) / ".submitit" / "packed"
        results_dir.mkdir(parents=True, exist_ok=True)
        shares = core_shares(sorted(os.sched_getaffinity(0)), len(pack))
        ctx = multiprocessing.get_context("fork")  # a fresh process that has imported no torch yet
        children: dict[int, multiprocessing.process.BaseProcess] = {}
        requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        for (job, cores) in zip(pack, shares):
            done = results_dir / f"{job[2]}.pkl"
            if done.is_file() and requeued:  # finished before the requeue: its result stands
                continue
            done.unlink(missing_ok=True)  # a result of an earlier sweep into this folder: the job runs again
            child = ctx.Process(target=self._run_child, args=(job, cores, done), name=f"job-{job[2]}")
            child.start()
            children[job[2]] = child
            log.info("packed job %d: pid %d on cores %s", job[2], child.pid, ",".join(map(str, cores)))
        signals = [signal.SIGUSR2, signal.SIGTERM]
        handlers = {s: signal.getsignal(s) for s in signals}
        asked: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:  # hand it on; requeue once every job has saved
            asked.append(signum)
            for c in children.values():
                if c.is_alive():
                    os.kill(c.pid, signum)

        for s in signals:
            signal.signal(s, on_signal)
        for child in children.values():
            child.join()
        for s in signals:
            signal.signal(s, handlers[s])
        preempted = [n for n, c in children.items() if c.exitcode == PREEMPTED_EXIT]
        if preempted:
            signum = asked[0] if asked else signal.SIGUSR2
            log.warning("packed jobs %s saved on signal %d: requeueing the allocation", preempted, signum)
            handler = handlers.get(signum)
            if callable(handler):
                handler(signum, None)  # submitit's: requeue this allocation, then exit
            sys.exit(PREEMPTED_EXIT)
        return [self._result(job, results_dir / f"{job[2]}.pkl", children.get(job[2])) for job in pack]

    def _run_child(self, job: tuple, cores: list[int], result_path: Path) -> None:
        import cloudpickle

        os.sched_setaffinity(0, cores)
        for s in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(s, _child_preempted)
        try:
            ret = self(*job)  # submitit's launcher: Hydra's run_job for this job's overrides
        except SystemExit as e:  # launch.py exits on SLURM so that an unpacked job is FAILED; here, a result
            if e.code == PREEMPTED_EXIT:
                raise
            ret = JobReturn(overrides=job[0], status=JobStatus.FAILED,
                            _return_value=PackedJobFailed(f"job {job[2]} exited with status {e.code}; its log: "
                                                          "its folder's launch.log"))
        tmp = result_path.with_suffix(".tmp")
        tmp.write_bytes(cloudpickle.dumps(ret))
        tmp.replace(result_path)

    @staticmethod
    def _result(job: tuple, path: Path, child: Any) -> JobReturn:
        import cloudpickle

        if path.is_file():
            return cloudpickle.loads(path.read_bytes())
        code = child.exitcode if child is not None else None
        return JobReturn(overrides=job[0], status=JobStatus.FAILED,
                         _return_value=PackedJobFailed(f"job {job[2]} ended without a result (exit status {code})"))


@dataclass
class PackedSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.rl_packing.PackedSlurmLauncher"
    jobs_per_task: int = 1


@dataclass
class PackedLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.rl_packing.PackedLocalLauncher"
    jobs_per_task: int = 1


def register_launcher_schemas() -> None:
    """conf/hydra/launcher/submitit_{slurm,local}.yaml are validated against the ConfigStore schema of the same
    name: these replace the plugin's. Hydra's plugin scan runs the plugin's module again, registering its own
    schema, so the scan is done first, here (once a process; Hydra reuses it)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()
    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="submitit_slurm", node=PackedSlurmConf, provider="rl_launcher")
    cs.store(group="hydra/launcher", name="submitit_local", node=PackedLocalConf, provider="rl_launcher")

