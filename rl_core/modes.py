"""What ``launch.py`` runs: train, test and report mode on a composed config, and a run's life around them
(resume or requeue, job markers, the garbage collector during start-up)."""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rl_core.config_check import ConfigError, check_config
from rl_core.markers import FAILED, PREEMPTED, clear_markers
from rl_core.run_config import (GROUPS, TEST_MAY_CHANGE, check_top_level, config_for_resume, config_for_test,
                                instantiate)
from rl_core.run_dir import check_free, claim_for_training, own_it
from rl_core.saved_config import load_saved_config, saved_config, trusted_names

log = logging.getLogger("launch")
CODE_DIR = Path(__file__).resolve().parents[1]


def is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def job_output_dir() -> Path:
    """This job's folder, as Hydra resolved it (``hydra.run.dir`` or the sweep's job dir)."""
    return Path(HydraConfig.get().runtime.output_dir)


def job_identity() -> tuple[str | None, str]:
    """(group, name) for the loggers: a sweep's jobs share its dir as group; the name adds the overrides."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        group = str(hc.sweep.dir)
        return group, f"{group}/{hc.job.override_dirname or hc.job.num}"
    return None, str(hc.runtime.output_dir)


def resume_or_start_over(cfg: DictConfig, run_dir: Path) -> tuple[bool, bool]:
    """(resume, start over) for this job. It resumes when asked (resume=true), or when SLURM requeued it
    after a preemption or time limit (the PREEMPTED marker, or SLURM_RESTART_COUNT) and it has a checkpoint.
    A requeued job without a checkpoint, and a sweep's job that a resumed sweep (resume=true) finds without
    one, start over in their own folder (whatever an earlier attempt left there is replaced)."""
    from rl_core.checkpoint import list_checkpoints

    has_ckpt = bool(list_checkpoints(run_dir))
    requeued = (run_dir / PREEMPTED).is_file() or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if requeued and has_ckpt:
        log.info("requeued job: resuming %s from its newest checkpoint", run_dir)
        return True, False
    if requeued or (cfg.resume and is_multirun() and not has_ckpt):
        log.info("%s has no checkpoint yet; this job starts from scratch", run_dir)
        return False, True
    return bool(cfg.resume), False


def start_gc() -> None:
    """Freeze the start-up's objects and turn the garbage collector back on, if ``launch.py`` turned it off.

    Start-up (torch, dynamo, Hydra, the run's objects) makes hundreds of thousands of long-lived objects;
    with the collector on, Python walks them again and again as they come and once more at exit. Frozen,
    no later collection walks them (docs/design.md, "Start-up and exit"). A no-op when the collector is on
    (a sweep, or a caller that never turned it off).
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def interrupted_message(cfg: DictConfig) -> str:
    """What a user who quit at once needs to know: what was saved, and how to go on."""
    from rl_core.checkpoint import list_checkpoints

    if cfg.mode != "train":
        return f"interrupted: {cfg.mode} mode stopped"
    run_dir = job_output_dir()
    found = list_checkpoints(run_dir)
    if not found:
        return f"interrupted: quit at once; no checkpoint was saved in {run_dir}"
    steps, path = found[-1]
    return (f"interrupted: quit at once; the steps after {path.name} ({steps:,} env steps) were not saved; "
            f"resume=true run_dir={run_dir} continues from there")


def _new_folder(path: Path) -> Path:
    """``path`` created new (``path-2``, ``-3``, ... when it exists): two commands never share a folder."""
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"cannot make a new folder beside {path}")


def _build_model(cfg: DictConfig, factory: object) -> object:
    return instantiate(cfg, "model", obs_dim=int(factory.observation_space.shape[0]),
                       action_dim=int(factory.action_space.shape[0]))


def train(cfg: DictConfig) -> float:
    """Build everything from ``cfg`` and train; returns the final validation mean reward."""
    import torch

    from rl_core.distributed import ranks_from_environment
    from rl_core.tracking.console import open_run_logs, print_config_tree
    from rl_core.tracking.loggers import SilentLogger
    from rl_core.tracking.provenance import save_provenance
    from rl_core.trainer import Trainer

    composed = cfg.copy()
    check_top_level(cfg)
    devices = list(cfg.machine.get("devices") or [])
    ranks = ranks_from_environment("nccl" if devices else "gloo", float(cfg.machine.get("collective_timeout_s", 300.0)),
                                   devices)
    run_dir, cfg.resume, overwrite = _agree_on_run_dir(cfg, ranks)
    if not ranks.main:  # rank 0 owns the folder; the others log to their own file in it
        open_run_logs(run_dir / f"rank{ranks.rank}")
    if cfg.resume:
        cfg = config_for_resume(cfg, run_dir)
    check_config(cfg, GROUPS)
    print_config_tree(cfg)
    group, name = job_identity()
    torch.manual_seed(cfg.seed)  # model init
    factory = instantiate(cfg, "env")  # refuses an env without flat Box observations and Box actions
    algo = instantiate(cfg, "algo")
    check_algo_fits(cfg, algo, factory)
    trainer = Trainer(
        run_dir=run_dir, task_factory=factory, model=_build_model(cfg, factory), algo=algo,
        pipeline=instantiate(cfg, "pipeline"), machine=_machine_for(cfg, ranks),
        logger=instantiate(cfg, "logger") if ranks.main else SilentLogger(),
        seed=cfg.seed, config=OmegaConf.to_container(cfg, resolve=True),
        resume=cfg.resume, init_weights=cfg.checkpoint, group=group, name=name,
        solved_reward=cfg.solved_reward, ranks=ranks,
    )
    if ranks.main:
        claim_for_training(run_dir, composed, cfg.resume, overwrite)
        clear_markers(run_dir, FAILED, PREEMPTED)
        save_provenance(run_dir, cfg, CODE_DIR)
        log.info("run dir: %s", run_dir)
    cores = sorted(os.sched_getaffinity(0))
    log.info("machine: cores %s, %d torch threads, %d worker processes", ",".join(map(str, cores)),
             trainer.machine.torch_threads, trainer.machine.num_workers)
    ranks.barrier()  # the folder is claimed before any rank trains into it
    start_gc()
    try:
        result = trainer.train()
    finally:
        ranks.close()
    log.info("done: %d env steps; final valid reward %.1f, success %.2f; outputs in %s",
             trainer.state.total_steps, result["reward"], result["success"], run_dir)
    return result["reward"]


def check_algo_fits(cfg: DictConfig, algo: Any, factory: Any) -> None:
    """Settings that do not apply to the chosen algorithm are refused, never ignored: PPO's rollout and update
    keys in ``pipeline`` under an off-policy learner, and an env whose action bounds its [-1, 1] actions miss."""
    name = type(algo).__name__
    for key in getattr(algo, "refused_pipeline_keys", ()):
        places = [f"pipeline.{key}"] * (key in cfg.pipeline) + [
            f"pipeline.stages[{i}].{key}" for i, st in enumerate(cfg.pipeline.stages) if key in st]
        if places:
            raise ConfigError(f"{places[0]}: a PPO setting that {name} does not use; remove it "
                              f"({name}'s own settings are algo.*: conf/algo/{name.lower()}.yaml)")
    space = factory.action_space
    if (getattr(algo, "model_actor", None) and factory.action_handling != "rescale"
            and not (np.all(space.low == -1.0) and np.all(space.high == 1.0))):
        raise ConfigError(f"env.action_handling: {name} acts in [-1, 1] and {factory.env_id}'s bounds are "
                          f"[{space.low.min():g}, {space.high.max():g}]: set env.action_handling=rescale")


def _machine_for(cfg: DictConfig, ranks: Any) -> Any:
    """The run's machine; with several ranks on GPUs, each rank's on its own GPU (``ranks.device``)."""
    machine = instantiate(cfg, "machine")
    if ranks.active and machine.devices:
        machine.devices = [ranks.device.index]
    return machine


def _agree_on_run_dir(cfg: DictConfig, ranks: Any) -> tuple[Path, bool, bool]:
    """(run folder, resume, overwrite) as rank 0 decides them, on every rank: rank 0 checks the folder is free
    (before any work; claimed, and checked again, once built); a refusal there stops every rank, naming it."""
    decision: tuple[str, bool, bool, str | None]
    if ranks.main:
        run_dir = job_output_dir()
        try:
            resume, start_over = resume_or_start_over(cfg, run_dir)
            overwrite = cfg.overwrite or start_over
            check_free(run_dir, resume, overwrite)
        except ConfigError as e:
            ranks.broadcast_object((str(run_dir), False, False, str(e)))
            raise
        decision = ranks.broadcast_object((str(run_dir), resume, overwrite, None))
    else:
        decision = ranks.broadcast_object(None)
        if decision[3] is not None:
            raise ConfigError(f"rank 0: {decision[3]}")
    return Path(decision[0]), decision[1], decision[2]


def test(cfg: DictConfig) -> float:
    """Evaluate checkpoints of a training run; returns the last tested checkpoint's mean reward."""
    from rl_core.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
    from rl_core.eval.tester import Tester
    from rl_core.tracking.loggers import RunInfo

    check_top_level(cfg)
    ckpt_file = Path(cfg.checkpoint) if cfg.checkpoint else None
    run_dir = ckpt_file.parent.parent if ckpt_file else Path(cfg.run_dir)
    if ckpt_file is not None and not ckpt_file.is_file():
        load_checkpoint(ckpt_file)  # raises, naming what is wrong
    if ckpt_file is None and not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} does not exist")
    found = [(0, ckpt_file)] if ckpt_file else list_checkpoints(run_dir)
    if not found:
        raise ConfigError(f"run_dir: no checkpoints in {run_dir / 'checkpoints'} "
                          "(test mode looks for the ckpt_<env steps>.pt files that training writes)")
    if (run_dir / "config.yaml").is_file():
        run_cfg = load_saved_config(run_dir / "config.yaml", trusted_names(cfg))
    elif ckpt_file is not None:
        run_cfg = saved_config(load_checkpoint(ckpt_file).get("config"), ckpt_file, trusted_names(cfg))
    else:
        raise ConfigError(f"run_dir: {run_dir} holds no config.yaml of a training run; "
                          "give the folder a training run wrote, or checkpoint=FILE")
    run_cfg = config_for_test(cfg, run_cfg, list(HydraConfig.get().overrides.task))
    check_config(run_cfg, TEST_MAY_CHANGE + ("test",))
    selection = instantiate(run_cfg, "test")
    try:
        chosen = selection.choose(found)
    except ValueError as e:
        raise ConfigError(f"test.{e}") from None
    factory = instantiate(run_cfg, "env")
    model = _build_model(run_cfg, factory)
    out_dir = _new_folder(run_dir / "test" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    own_it(out_dir, cfg)
    log.info("testing %d of %d checkpoint(s) of %s into %s", len(chosen), len(found), run_dir, out_dir)
    start_gc()
    run_info = RunInfo(out_dir, "test", name=str(out_dir), config=OmegaConf.to_container(run_cfg, resolve=True))
    results, failures = Tester(out_dir, factory, model, instantiate(run_cfg, "machine"), selection,
                               instantiate(run_cfg, "logger"), int(run_cfg.seed), run_info).run(chosen)
    if failures:
        raise CheckpointError(f"{len(failures)} of {len(chosen)} checkpoint(s) could not be tested "
                              f"(named above); results of the others are in {out_dir / 'test.json'}")
    return results[-1]["reward"]


def report(cfg: DictConfig) -> float | None:
    """Write the sweep report of ``sweep_dir``; returns the best group's mean final reward."""
    from rl_core.tracking.report import SweepJobsFailed, print_report, read_sweep, report_logger, write_report

    start_gc()
    check_top_level(cfg)
    sweep_dir = Path(cfg.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} does not exist")
    if not read_sweep(sweep_dir):
        raise ConfigError(f"sweep_dir: {sweep_dir} holds no jobs of a multirun (folders with .hydra/overrides.yaml)")
    own_it(sweep_dir)
    result = write_report(sweep_dir, cfg.solved_reward, report_logger(cfg), str(sweep_dir))
    print_report(result, sweep_dir)
    failed = [j for j in result["problems"] if j.status == "failed"]
    if failed:
        raise SweepJobsFailed(f"{len(failed)} job(s) of {sweep_dir} failed ({', '.join(j.num for j in failed)}; "
                              f"listed above and in {sweep_dir / 'report.md'})")
    means = [r["mean"] for r in result["rows"] if r["seeds"]]
    return max(means) if means else None


def tune_worker(cfg: DictConfig) -> int:
    """A worker of a tuning study (the rl_tune sweeper starts them); returns the study's counted trials."""
    from rl_core.tune.worker import run_worker

    check_top_level(cfg)
    return run_worker(cfg)


MODE_FUNCTIONS = {"train": train, "test": test, "report": report, "tune_worker": tune_worker}
