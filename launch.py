"""Compose the run config with Hydra, build its objects, and train.

    python launch.py                                      # the tutorial's experiment, as in the reference
    python launch.py env=lunar_lander_continuous algo=ppo seed=1
    python launch.py experiment=smoke                     # a few seconds through every code path
    python launch.py run_dir=outputs/my_run resume=true   # continue an interrupted run where it stopped
    python launch.py --cfg job                            # print the composed config and exit
    python launch.py mode=test run_dir=outputs/my_run     # test its checkpoints, with videos
    python launch.py --multirun seed=1,2,3 pipeline.optimizer.lr=1e-3,3e-4   # a sweep, with a report at the end
    python launch.py mode=report sweep_dir=multirun/2026-11-23/10-00-00      # the sweep report again
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("launch")
# conf/hydra/launcher/submitit_*.yaml are checked against the plugin's schema of the same name, which is
# what we want (a mistyped key fails); Hydra warns that this matching is deprecated.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema", category=UserWarning)

CODE_DIR = Path(__file__).resolve().parent
GROUPS = ["env", "model", "algo", "pipeline", "machine", "logger"]
# Groups a resumed run may change (where it runs, where it logs); the others come from the run's saved config.
RESUME_MAY_CHANGE = {"machine", "logger"}
MODES = ("train", "test", "report")
# Group options a test run may override on top of the training run's saved config.
TEST_MAY_CHANGE = ("env", "model", "machine", "logger")
# Job-dir markers of a sweep job's outcome, beside the trainer's DONE: read by the sweep report and resume.
FAILED, PREEMPTED = "FAILED", "PREEMPTED"


def _job_dir(mode: str, run_dir: str, checkpoint: str | None, sweep_dir: str | None, stamp: str) -> str:
    """Hydra's job dir: the run itself when training; ``<run>/test/<time>`` when testing, so a test
    never changes the training run's own files; the sweep dir for its report."""
    if mode == "report":
        return sweep_dir or "."
    if mode != "test":
        return run_dir
    base = Path(checkpoint).parent.parent if checkpoint else Path(run_dir)
    return str(base / "test" / stamp)


def _parallel_jobs(cores_per_job: int) -> int:
    """How many jobs of a local sweep the machine's cores carry at once (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(cores_per_job)))


def _job_cores(num_workers: int | None) -> int:
    """CPUs a cluster job asks for: the learner plus its worker processes, and at least 2 (the update
    runs on the learner's threads)."""
    return max(2, 1 + int(num_workers or 0))


OmegaConf.register_new_resolver("job_dir", _job_dir, replace=True)
OmegaConf.register_new_resolver("job_cores", _job_cores, replace=True)
OmegaConf.register_new_resolver("parallel_jobs", _parallel_jobs, replace=True)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k2: v2 for k, v in node.items() for k2, v2 in _flatten(v, f"{prefix}{k}.").items()}
    if isinstance(node, list):
        return {k2: v2 for i, v in enumerate(node) for k2, v2 in _flatten(v, f"{prefix[:-1]}[{i}].").items()}
    return {prefix[:-1]: node}


def check_top_level(cfg: DictConfig) -> None:
    from rl_core.config_check import ConfigError

    expected = {"seed": int, "resume": bool, "mode": str, "run_dir": str}
    for key, tp in expected.items():
        value = cfg[key]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if cfg.mode not in MODES:
        raise ConfigError(f"mode: must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not isinstance(cfg.solved_reward, (int, float)) or isinstance(cfg.solved_reward, bool):
        raise ConfigError(f"solved_reward: expected a number, got {cfg.solved_reward!r}")
    if cfg.mode == "report" and not isinstance(cfg.sweep_dir, str):
        raise ConfigError(f"sweep_dir: report mode needs the folder of a multirun, got {cfg.sweep_dir!r}")
    if cfg.checkpoint is not None and not isinstance(cfg.checkpoint, str):
        raise ConfigError(f"checkpoint: expected a file path, got {cfg.checkpoint!r}")
    if cfg.mode == "train" and cfg.resume and cfg.checkpoint:
        raise ConfigError("checkpoint: give either resume=true (continue this run) or checkpoint=FILE "
                          "(new run from those weights), not both")


def config_for_resume(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The run's saved config, with this command's machine, logger and top-level switches.

    Other differences are listed in a warning and ignored: a run continues as it started.
    """
    from rl_core.checkpoint import CheckpointError

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise CheckpointError(f"resume=true but {run_dir} holds no config.yaml of an earlier run; "
                              "point run_dir at the run to continue")
    saved = OmegaConf.load(saved_file)
    now = OmegaConf.to_container(cfg, resolve=True)
    before = OmegaConf.to_container(saved, resolve=True)
    keep = [g for g in GROUPS if g not in RESUME_MAY_CHANGE] + ["seed"]
    a, b = _flatten({k: before.get(k) for k in keep}), _flatten({k: now.get(k) for k in keep})
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        log.warning("resume keeps the run's saved config; ignoring: %s",
                    ", ".join(f"{k}={b.get(k)!r} (saved {a.get(k)!r})" for k in changed))
    merged = OmegaConf.merge(saved, {g: cfg[g] for g in RESUME_MAY_CHANGE},
                             {"resume": True, "run_dir": cfg.run_dir, "checkpoint": None})
    return merged


def _instantiate(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of one group; a constructor's ValueError becomes a ConfigError naming the key."""
    from hydra.errors import InstantiationException

    from rl_core.config_check import ConfigError

    try:
        return hydra.utils.instantiate(cfg[group], **kwargs)
    except InstantiationException as e:
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        full_key = re.search(r"full_key: (\S+)", str(e))
        where = full_key.group(1) if full_key else group
        if isinstance(cause, ValueError):
            raise ConfigError(f"{where}.{cause}" if re.match(r"^\w+: ", str(cause)) else f"{where}: {cause}") from None
        raise ConfigError(f"{where}: {type(cause).__name__}: {cause}") from None


def job_identity(cfg: DictConfig) -> tuple[str | None, str]:
    """(group, name) for the loggers: a sweep's jobs share its dir as group; the name adds the overrides."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        group = str(hc.sweep.dir)
        return group, f"{group}/{hc.job.override_dirname or hc.job.num}"
    return None, str(hc.runtime.output_dir)


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def _should_resume(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether this job continues from its dir: asked for (resume=true), or requeued by SLURM after a
    preemption or time limit (the PREEMPTED marker, or SLURM_RESTART_COUNT with a checkpoint present).
    A sweep resumed with resume=true starts the jobs that never saved a checkpoint from scratch."""
    from rl_core.checkpoint import list_checkpoints

    has_ckpt = bool(list_checkpoints(run_dir))
    requeued = (run_dir / PREEMPTED).is_file() or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if requeued and has_ckpt:
        log.info("requeued job: resuming %s from its newest checkpoint", run_dir)
        return True
    if cfg.resume and _is_multirun() and not has_ckpt:
        log.info("resume=true: %s has no checkpoint yet; this job starts from scratch", run_dir)
        return False
    return bool(cfg.resume)


def _start_gc() -> None:
    """Start-up (torch, dynamo, Hydra, the run's objects) makes ~660k objects, most of which live as long
    as the process. With the garbage collector on, Python walks all of them again and again as they come
    (six full collections in a start-up), and once more at exit. ``__main__`` turns it off for a single
    run's start-up; this freezes what exists by then, so that no later collection, nor the one at exit,
    walks those objects again, and turns the collector back on for the run (train, test or report mode).
    Measured on 2 cores: a run's process ends 1-2 s sooner (start-up and exit), for ~9 MB of the
    start-up's cyclic garbage left uncollected. A no-op when the collector is on (a sweep, a SLURM job)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def train(cfg: DictConfig) -> float:
    """Build everything from ``cfg`` and train; returns the final validation mean reward."""
    import gymnasium as gym
    import torch

    from rl_core.config_check import ConfigError, check_config
    from rl_core.console import print_config_tree
    from rl_core.provenance import save_provenance
    from rl_core.trainer import Trainer

    check_top_level(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg.resume = _should_resume(cfg, run_dir)
    (run_dir / FAILED).unlink(missing_ok=True)
    (run_dir / PREEMPTED).unlink(missing_ok=True)
    if cfg.resume:
        cfg = config_for_resume(cfg, run_dir)
    check_config(cfg, GROUPS)
    print_config_tree(cfg)
    group, name = job_identity(cfg)
    torch.manual_seed(cfg.seed)  # model init
    factory = _instantiate(cfg, "env")
    if not isinstance(factory.action_space, gym.spaces.Box):
        raise ConfigError(f"env.env_id: {factory.env_id} has action space {factory.action_space}; "
                          f"{cfg.model._target_} needs a continuous (Box) one")
    model = _instantiate(cfg, "model", obs_dim=int(factory.observation_space.shape[0]),
                         action_dim=int(factory.action_space.shape[0]))
    trainer = Trainer(
        run_dir=run_dir, task_factory=factory, model=model, loss=_instantiate(cfg, "algo"),
        pipeline=_instantiate(cfg, "pipeline"), machine=_instantiate(cfg, "machine"),
        logger=_instantiate(cfg, "logger"), seed=cfg.seed, config=OmegaConf.to_container(cfg, resolve=True),
        resume=cfg.resume, init_weights=cfg.checkpoint, group=group, name=name,
    )
    save_provenance(run_dir, cfg, CODE_DIR)
    log.info("run dir: %s", run_dir)
    _start_gc()
    result = trainer.train()
    log.info("done: %d env steps; final valid reward %.1f, success %.2f; outputs in %s",
             trainer.state.total_steps, result["reward"], result["success"], run_dir)
    return result["reward"]


def test(cfg: DictConfig) -> float:
    """Evaluate checkpoints of a training run; returns the last tested checkpoint's mean reward."""
    from rl_core.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
    from rl_core.config_check import ConfigError, check_config
    from rl_core.loggers import RunInfo
    from rl_core.tester import Tester

    check_top_level(cfg)
    ckpt_file = Path(cfg.checkpoint) if cfg.checkpoint else None
    run_dir = ckpt_file.parent.parent if ckpt_file else Path(cfg.run_dir)
    if ckpt_file is not None and not ckpt_file.is_file():
        raise CheckpointError(f"checkpoint {ckpt_file} does not exist")
    found = [(0, ckpt_file)] if ckpt_file else list_checkpoints(run_dir)
    if not found:
        raise ConfigError(f"run_dir: no checkpoints in {run_dir / 'checkpoints'} "
                          "(test mode looks for the ckpt_<env steps>.pt files that training writes)")
    if (run_dir / "config.yaml").is_file():
        run_cfg = OmegaConf.load(run_dir / "config.yaml")
    elif ckpt_file is not None:
        run_cfg = OmegaConf.create(load_checkpoint(ckpt_file)["config"])
    else:
        raise ConfigError(f"run_dir: {run_dir} holds no config.yaml of a training run; "
                          "give the folder a training run wrote, or checkpoint=FILE")
    overrides = [(o.lstrip("+~").split("=", 1)[0], o) for o in HydraConfig.get().overrides.task]
    for key, _ in overrides:
        if key in RESUME_MAY_CHANGE:  # where it runs and logs: any option of the group (logger=wandb)
            run_cfg[key] = cfg[key]
    for key, override in overrides:
        if key.split(".")[0] in TEST_MAY_CHANGE and "." in key:
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), force_add=True)
        elif key in TEST_MAY_CHANGE and key not in RESUME_MAY_CHANGE:
            log.warning("test mode builds %s from the run's saved config; ignoring %s", key, override)
    run_cfg.test = cfg.test
    check_config(run_cfg, TEST_MAY_CHANGE + ("test",))
    selection = _instantiate(run_cfg, "test")
    try:
        chosen = selection.choose(found)
    except ValueError as e:
        raise ConfigError(f"test.{e}") from None
    factory = _instantiate(run_cfg, "env")
    model = _instantiate(run_cfg, "model", obs_dim=int(factory.observation_space.shape[0]),
                         action_dim=int(factory.action_space.shape[0]))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("testing %d of %d checkpoint(s) of %s into %s", len(chosen), len(found), run_dir, out_dir)
    _start_gc()
    run_info = RunInfo(out_dir, "test", name=str(out_dir), config=OmegaConf.to_container(run_cfg, resolve=True))
    results, failures = Tester(out_dir, factory, model, _instantiate(run_cfg, "machine"), selection,
                               _instantiate(run_cfg, "logger"), int(run_cfg.seed), run_info).run(chosen)
    if failures:
        raise CheckpointError(f"{len(failures)} of {len(chosen)} checkpoint(s) could not be tested "
                              f"(named above); results of the others are in {out_dir / 'test.json'}")
    return results[-1]["reward"]


def report(cfg: DictConfig) -> float | None:
    """Write the sweep report of ``sweep_dir``; returns the best group's mean final reward."""
    from rl_core.report import print_report, report_logger, write_report

    from rl_core.config_check import ConfigError
    from rl_core.report import read_sweep

    _start_gc()
    check_top_level(cfg)
    sweep_dir = Path(cfg.sweep_dir)
    if not read_sweep(sweep_dir):  # Hydra has made the folder by now (it is report mode's job dir)
        raise ConfigError(f"sweep_dir: {sweep_dir} holds no jobs of a multirun (folders with .hydra/overrides.yaml)")
    result = write_report(sweep_dir, float(cfg.solved_reward), report_logger(cfg), str(sweep_dir))
    print_report(result, sweep_dir)
    means = [r["mean"] for r in result["rows"] if r["seeds"]]
    return max(means) if means else None


def _write_marker(name: str, **fields: Any) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(fields) + "\n")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from envs.vector import SamplerError
    from rl_core.checkpoint import CheckpointError
    from rl_core.config_check import ConfigError
    from rl_core.trainer import TrainingInterrupted

    modes = {"train": train, "test": test, "report": report}
    try:
        return modes.get(cfg.mode, train)(cfg)
    except TrainingInterrupted as e:
        if _is_multirun():
            _write_marker(PREEMPTED, steps=e.steps, signal=e.signum)
        log.warning("%s", e)
        if callable(e.handler) and e.handler is not signal.default_int_handler:
            e.handler(e.signum, None)  # e.g. submitit's: requeue this job (it resumes from the checkpoint)
        sys.exit(3)  # stops a local sweep too: Ctrl-C means stop, not "next job"
    except Exception as e:
        if _is_multirun():
            log.error("job failed: %s: %s", type(e).__name__, e, exc_info=not isinstance(e, ConfigError))
            if cfg.mode == "train":
                _write_marker(FAILED, error=f"{type(e).__name__}: {e}".splitlines()[0],
                              traceback=traceback.format_exc())
            if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
                sys.exit(1)  # so SLURM records the job as FAILED, not COMPLETED; the launcher then fails too
            raise  # the launcher records the failed job, the sweep goes on, and its exit status says so
        if isinstance(e, (ConfigError, CheckpointError, SamplerError)):
            log.error("error: %s", e)
            sys.exit(2)
        raise


if __name__ == "__main__":
    if not {"-m", "--multirun"} & set(sys.argv):  # a sweep's launcher process may wait for hours: left as it is
        gc.disable()  # until the run's objects are built: see _start_gc
    try:
        main()
    finally:
        gc.freeze()  # skip the exit's last collection over the same objects: ~1 s; atexit handlers still run
