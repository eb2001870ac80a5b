"""Compose the run config with Hydra, build its objects, and run the mode (train, test or report).

    python launch.py                                      # the tutorial's experiment, as in the reference
    python launch.py env=lunar_lander_continuous algo=ppo seed=1
    python launch.py experiment=smoke                     # a few seconds through every code path
    python launch.py run_dir=outputs/my_run resume=true   # continue an interrupted run where it stopped
    python launch.py --cfg job                            # print the composed config and exit
    python launch.py mode=test run_dir=outputs/my_run     # test its checkpoints, with videos
    python launch.py --multirun seed=1,2,3 pipeline.optimizer.lr=1e-3,3e-4   # a sweep, with a report at the end
    python launch.py mode=report sweep_dir=multirun/2026-11-23/10-00-00      # the sweep report again

Exit codes: 0 done; 2 a config, checkpoint or sampler error (one line names it); 3 stopped by a signal after
saving a checkpoint (``resume=true`` continues); 4 a sweep report whose sweep has failed jobs; 130 quit at once
by Ctrl-C; 1 anything else (with its traceback).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

# Before torch loads OpenMP: its idle threads spin-wait this long (libgomp's default is 300,000 spins) before
# they sleep. Shorter, a run beside other busy processes does not lose its cores to spinning threads, and a
# run alone stays as fast (docs/performance.md, "Beside other work"). An exported value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "2000")
# MuJoCo renders test videos through EGL on a machine without a display (Mesa's software EGL on a server,
# Debian's libegl1 + libegl-mesa0); a desktop keeps MuJoCo's own choice. An exported value wins.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import hydra  # noqa: E402
from hydra.errors import CompactHydraException  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rl_core.markers import FAILED, PREEMPTED, read_marker, write_marker  # noqa: E402
from rl_core.packing import register_launcher_schemas  # noqa: E402
from rl_core.run_config import check_yaml_files, describe_hydra_error, register_resolvers  # noqa: E402

log = logging.getLogger("launch")
CONF_DIR = Path(__file__).resolve().parent / "conf"
# conf/hydra/launcher/submitit_*.yaml are checked against the ConfigStore schema of the same name (ours, the
# plugin's plus jobs_per_task: rl_core.packing), which is what we want (a mistyped key fails); Hydra warns
# that this matching is deprecated.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema", category=UserWarning)
register_resolvers()
register_launcher_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from envs.samplers import SamplerError
    from rl_core.checkpoint import CheckpointError
    from rl_core.config_check import ConfigError
    from rl_core.distributed import RanksFailed, end_slurm_job, process_rank
    from rl_core.modes import MODE_FUNCTIONS, interrupted_message, is_multirun, job_output_dir
    from rl_core.packing import job_core_share
    from rl_core.run_dir import RunDirTaken, own_it, release_all
    from rl_core.tracking.report import SweepJobsFailed
    from rl_core.trainer import TrainingInterrupted

    one_line_errors = {ConfigError: 2, CheckpointError: 2, SamplerError: 2, SweepJobsFailed: 4, RanksFailed: 1}
    try:
        with job_core_share():  # one of several jobs of a local parallel sweep: its own cores
            return MODE_FUNCTIONS.get(cfg.mode, MODE_FUNCTIONS["train"])(cfg)
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one before training began
        log.warning("%s", interrupted_message(cfg))
        sys.exit(130)
    except TrainingInterrupted as e:
        if is_multirun() and process_rank() == 0:  # of several ranks, rank 0 writes the marker
            write_marker(job_output_dir(), PREEMPTED, steps=e.steps, signal=e.signum)
        log.warning("%s", e)
        if callable(e.handler) and e.handler is not signal.default_int_handler:
            e.handler(e.signum, None)  # e.g. submitit's: requeue this job (it resumes from the checkpoint)
        sys.exit(3)  # stops a local sweep too: Ctrl-C means stop, not "next job"
    except Exception as e:
        code = next((c for kind, c in one_line_errors.items() if isinstance(e, kind)), None)
        if is_multirun():
            log.error("job failed: %s: %s", type(e).__name__, e, exc_info=code is None)
            # the job's dir is the sweep's; of several ranks, rank 0 writes the marker, or, when the ranks
            # failed and rank 0 has not written it (it may be the one that died), the rank that saw it
            failed = {"error": f"{type(e).__name__}: {e}".splitlines()[0], "traceback": traceback.format_exc()}
            if cfg.mode == "train" and process_rank() == 0 and not isinstance(e, RunDirTaken):
                own_it(job_output_dir(), cfg)
                write_marker(job_output_dir(), FAILED, **failed)
            elif isinstance(e, RanksFailed) and read_marker(job_output_dir(), FAILED) is None:
                write_marker(job_output_dir(), FAILED, **failed)
            if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
                if isinstance(e, RanksFailed):
                    end_slurm_job()  # a task on a dead node never ends: srun would wait for it
                sys.exit(1)  # so SLURM records the job as FAILED, not COMPLETED; the launcher then fails too
            if code is not None:  # the sweep goes on; at its end Hydra prints this one line and exits 1
                raise CompactHydraException(f"a job of the sweep failed: {e}") from None
            raise  # the launcher records the failed job, the sweep goes on, and its exit status says so
        if code is None:
            raise
        log.error("error: %s", e)
        sys.exit(code)
    finally:
        release_all()  # the run folder's lock: a sweep's next job in this process, or the end


def run() -> None:
    """``main`` as a command: errors of composing the config (a mistyped key, a missing option, a YAML syntax
    error in conf/) as one message naming the key or file, not Hydra's report; ``HYDRA_FULL_ERROR=1`` gives
    the full trace instead."""
    if broken := check_yaml_files(CONF_DIR):
        print(f"error: {broken}", file=sys.stderr)
        sys.exit(2)
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing, and the message is made here
    try:
        main()
    except Exception as e:
        described = None if full_error else describe_hydra_error(e)
        if described is None:
            raise
        print(f"error: {described[0]}", file=sys.stderr)
        sys.exit(described[1])
    finally:
        if not full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    if not {"-m", "--multirun"} & set(sys.argv):  # a sweep's launcher process may wait for hours: left as it is
        gc.disable()  # until the run's objects are built: rl_core.modes.start_gc
    try:
        run()
    finally:
        gc.freeze()  # skip the exit's last collection over the same objects; atexit handlers still run
