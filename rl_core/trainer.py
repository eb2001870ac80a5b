"""The run loop: stages, checkpoints, validation and held-out checks, signals, ranks, logs and progress.

It knows nothing of any algorithm: an algorithm (``conf/algo``: ``rl_core.algo.ppo.PPO``, ``rl_core.algo.sac.SAC``,
``rl_core.algo.td3.TD3``) collects env steps and updates, and hands its state to the checkpoint.
Steps are env steps summed over samplers (and ranks).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.factory import GymTaskFactory
from envs.samplers import Samplers
from rl_core.algo.pipeline import TrainingPipeline
from rl_core.checkpoint import (CheckpointError, checkpoint_path, list_checkpoints, load_checkpoint,
                                load_model_weights, remove_stale_temporaries, save_checkpoint)
from rl_core.config_check import ConfigError
from rl_core.distributed import Ranks
from rl_core.eval.evaluation import fixed_tasks, play_tasks, summarize
from rl_core.machine import Machine
from rl_core.markers import DONE, PRUNE, read_marker, write_marker
from rl_core.replay_files import ReplayFiles
from rl_core.run_state import MetricWindow, TrainState
from rl_core.signals import StopFlag, TrainingAborted, TrainingInterrupted  # noqa: F401 (launch.py's import)
from rl_core.tracking.loggers import Logger, RunInfo
from rl_core.tracking.progress import TrainProgress
from rl_core.tracking.report import read_valid

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class Trainer:
    """Trains ``model`` with ``algo`` through the stages of ``pipeline`` on tasks from ``task_factory``.

    Args:
        run_dir: the job's folder: checkpoints, TensorBoard events and ``valid.json`` go here.
        algo: the algorithm (``conf/algo``); see ``rl_core.algo.ppo.PPO`` for the interface.
        config: the resolved run config, stored in every checkpoint.
        group / name: the sweep this job belongs to and a readable name, for the loggers.
        resume: continue from the newest checkpoint in ``run_dir``.
        init_weights: a checkpoint whose model weights start the run (optimizer and steps start fresh).
        solved_reward: the env's solved score; with ``pipeline.heldout_checks`` the first checkpoint whose
            validation reaches it also plays the held-out episodes (None: only the final one does).
        ranks: this process's rank among the learners of one experiment (``rl_core.distributed``); each
            steps ``machine.num_samplers`` samplers, so a rollout has ``num_steps × num_samplers × world``
            env steps. Rank 0 alone validates, checkpoints and logs.
    """

    def __init__(self, run_dir: Path, task_factory: GymTaskFactory, model: torch.nn.Module, algo: Any,
                 pipeline: TrainingPipeline, machine: Machine, logger: Logger, seed: int,
                 config: dict[str, Any], resume: bool = False, init_weights: str | None = None,
                 group: str | None = None, name: str | None = None, solved_reward: float | None = None,
                 ranks: Ranks | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.ranks = ranks or Ranks()
        self.solved_reward = solved_reward
        self._reached_solved = False  # a validation reached solved_reward (set from valid.json on resume)
        self.factory, self.algo, self.pipeline, self.machine, self.logger = task_factory, algo, pipeline, machine, logger
        self.seed, self.config, self.group, self.name = seed, config, group, name
        self.device = machine.device
        self.model = model.to(self.device)
        for i, stage in enumerate(pipeline.stages):
            unknown = set(stage.loss_names or []) - {algo.loss_name}
            if unknown:
                raise ConfigError(f"pipeline.stages[{i}].loss_names: unknown loss {sorted(unknown)}; "
                                  f"available: ['{algo.loss_name}']")
        algo.bind(self.model, pipeline, machine, self.ranks, seed)
        self.replay = getattr(algo, "buffer", None)  # an off-policy learner's buffer: saved as segment files
        self.replay_files = ReplayFiles(checkpoint_path(self.run_dir, 0).parent)
        self.state = TrainState()
        self.window = MetricWindow()
        self.resume_state: dict[str, Any] | None = None
        if resume:
            found = list_checkpoints(self.run_dir)
            if not found:
                raise CheckpointError(f"resume=true but {self.run_dir / 'checkpoints'} holds no checkpoint "
                                      "(ckpt_*.pt); start without resume=true, or point run_dir at the run to continue")
            self.resume_state = self._load_newest(found)
            saved, here = len(self.resume_state["samplers"]), machine.num_samplers * self.ranks.world
            if saved != here:  # a checkpoint holds every rank's samplers: the layout must be the same
                raise CheckpointError(f"{found[-1][1]} holds the states of {saved} samplers (ranks × "
                                      f"machine.num_samplers), this run has {self.ranks.world} rank(s) × "
                                      f"{machine.num_samplers}: resume with {saved // machine.num_samplers} "
                                      "rank(s), as the run trained")
            self._restore(self.resume_state, found[-1][1])
        elif init_weights:
            load_model_weights(self.model, load_checkpoint(Path(init_weights), self.device)["model"], Path(init_weights))
            algo.weights_loaded()  # e.g. SAC's target networks start from these weights too
            log.info("starting from the weights of %s", init_weights)

    # -- checkpoints ------------------------------------------------------------------------------

    def _load_newest(self, found: list[tuple[int, Path]]) -> dict[str, Any]:
        """The newest checkpoint; when it cannot be read, the error says which older one can, and how to
        continue from it (the unreadable file is never touched)."""
        try:
            return load_checkpoint(found[-1][1], self.device)
        except CheckpointError as e:
            for steps, older in reversed(found[:-1]):
                try:
                    load_checkpoint(older, self.device)
                except CheckpointError:
                    continue
                newest = found[-1][1]
                raise CheckpointError(f"{e}. The newest readable checkpoint is {older.name} ({steps:,} env steps): "
                                      f"to continue from it, move the unreadable one aside (mv {newest} "
                                      f"{newest}.unreadable) and resume again") from None
            raise

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        load_model_weights(self.model, ckpt["model"], path)
        self.algo.load_state_dict(ckpt, path)
        if self.replay is not None:
            self.replay_files.load(self.replay, ckpt["replay"], path)
        self.state = TrainState(**ckpt["state"])
        self.window.load_state_dict(ckpt["window"])
        log.info("resuming %s at step %d", path, self.state.total_steps)

    def _save(self, samplers: Samplers, scheduled: bool = True) -> Path | None:
        """Write a checkpoint (rank 0, with every rank's sampler states). ``scheduled=False`` (a save on a
        signal) leaves the save schedule as it was, so a resumed run checkpoints and validates at the same
        steps as an uninterrupted one. Returns its path on rank 0, None on the others."""
        # every rank takes part: its samplers' states and what its algorithm keeps per rank
        gathered = self.ranks.gather_objects((samplers.state_dicts(), self.algo.rank_state()))
        if scheduled:
            self.state.last_save_steps = self.state.total_steps
        if not self.ranks.main:
            return None
        path = checkpoint_path(self.run_dir, self.state.total_steps)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            **self.algo.state_dict([r for _, r in gathered]),
            "state": asdict(self.state),
            "samplers": [s for states, _ in gathered for s in states],
            "window": self.window.state_dict(),
            "config": self.config,
            "seed": self.seed,
            "scheduled": scheduled,
        }
        if self.replay is not None:  # the rows since the last save, before the checkpoint that names them
            state["replay"] = self.replay_files.save(self.replay)
        return save_checkpoint(state, path)

    def _evaluate(self, mode: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Deterministic episodes on ``mode``'s fixed tasks (valid, or the held-out set), logged as ``mode/*``."""
        # batch-of-a-few inference: one thread; more only wait on each other, badly so on a busy machine
        torch.set_num_threads(1)
        self.model.eval()
        episodes = play_tasks(self.model, self.factory, fixed_tasks(self.factory, mode, self.machine.valid_samplers),
                              self.device)
        self.model.train()
        summary = summarize(episodes)
        self.logger.log_scalars({f"{mode}/{k}": v for k, v in summary.items()}, self.state.total_steps)
        self._update_wall()
        return summary, episodes

    def _validate(self, ckpt: Path | None, final: bool = False) -> dict[str, float]:
        """Deterministic evaluation on the fixed valid tasks, logged as ``valid/*`` and to ``valid.json``; some
        validations also play the held-out set (see ``_wants_heldout``), logged as ``heldout/*``."""
        t0 = time.perf_counter()
        summary, episodes = self._evaluate("valid")
        entry = {"training_steps": self.state.total_steps, "wall_s": round(self.state.wall_s, 2),
                 "checkpoint": ckpt.name if ckpt else None, **summary, "episodes": episodes}
        log.info("valid @ %d steps: reward %.1f, success %.2f, ep_length %.0f (%d episodes, %.1f s)",
                 self.state.total_steps, summary["reward"], summary["success"], summary["ep_length"],
                 len(episodes), time.perf_counter() - t0)
        if ckpt is not None and self._wants_heldout(summary["reward"], final):
            t0 = time.perf_counter()
            heldout, _ = self._evaluate("heldout")
            entry["heldout"] = {**heldout, "wall_s": round(self.state.wall_s, 2)}
            summary = {**summary, "heldout_reward": heldout["reward"]}
            log.info("held-out @ %d steps: reward %.1f ± %.1f, success %.2f (%d episodes, %.1f s)",
                     self.state.total_steps, heldout["reward"], heldout["reward_std"], heldout["success"],
                     heldout["num_tasks_evaled"], time.perf_counter() - t0)
        if self.solved_reward is not None and summary["reward"] >= self.solved_reward:
            self._reached_solved = True
        with open(self.run_dir / "valid.json", "a") as f:  # one JSON object per line
            f.write(json.dumps(entry) + "\n")
        return summary

    def _wants_heldout(self, reward: float, final: bool) -> bool:
        """Play the held-out set: when a validation reaches the stop target (it may end the run, so it is
        final, and ``confirm_on_heldout`` needs it), and with ``heldout_checks`` on the final checkpoint and the
        first that reaches ``solved_reward``."""
        stop = self.pipeline.stop_at_valid_reward
        if stop is not None and reward >= stop and (self.pipeline.confirm_on_heldout or self.pipeline.heldout_checks):
            return True
        if not self.pipeline.heldout_checks:
            return False
        return final or (self.solved_reward is not None and reward >= self.solved_reward and not self._reached_solved)

    def _solved(self, summary: dict[str, float]) -> bool:
        """Whether a validation reached ``stop_at_valid_reward`` (and, when asked, so did the held-out set)."""
        target = self.pipeline.stop_at_valid_reward
        if target is None or summary["reward"] < target:
            return False
        return not self.pipeline.confirm_on_heldout or summary.get("heldout_reward", -float("inf")) >= target

    def _finishing(self) -> bool:
        """Whether the rollout just done was the run's last (the last stage has run its steps)."""
        last = len(self.pipeline.stages) - 1
        return (self.state.stage_index == last
                and self.state.stage_steps >= self.pipeline.stages[last].max_stage_steps)

    # -- the loop ---------------------------------------------------------------------------------

    def _advance_stage(self) -> bool:
        """Move past finished stages (checked at the start of a rollout); False when all are done."""
        while self.state.stage_index < len(self.pipeline.stages):
            if self.state.stage_steps < self.pipeline.stages[self.state.stage_index].max_stage_steps:
                return True
            self.state.stage_index += 1
            self.state.stage_steps = 0
        return False

    def _log_window(self) -> None:
        if self.ranks.active:  # rank 0 logs every rank's episodes
            gathered = self.ranks.gather_objects(self.window.episodes)
            if not self.ranks.main:
                self.window = MetricWindow()
                self.state.last_log_steps = self.state.total_steps
                return
            self.window.episodes = [e for episodes in gathered for e in episodes]
        lr = self.algo.lr
        summary = self.window.summary(lr, self.state.stage_index, self.algo.loss_name)
        self.logger.log_scalars(summary, self.state.total_steps)
        log.info("step %d: reward %s, success %s, %.0f steps/s, loss %.3f, lr %.2e", self.state.total_steps,
                 f"{summary['train/reward']:.1f}" if "train/reward" in summary else "-",
                 f"{summary['train/success']:.2f}" if "train/success" in summary else "-",
                 summary["train/approx_fps"], summary.get("train/total_loss", float("nan")), lr)
        self.window = MetricWindow()
        self.state.last_log_steps = self.state.total_steps

    def _update_wall(self) -> None:
        self.state.wall_s = self._wall_at_start + time.perf_counter() - self._t_start

    def train(self) -> dict[str, float]:
        """Run the pipeline to its end; returns the last validation summary."""
        self._wall_at_start, self._t_start = self.state.wall_s, time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        main, m = self.ranks.main, self.machine
        for tmp in remove_stale_temporaries(self.run_dir) if main else []:
            log.info("removed %s, left by a checkpoint write that was killed", tmp)
        resumed = self.resume_state is not None
        done = read_marker(self.run_dir, DONE) if resumed else None
        if done is not None:
            log.info("%s already finished at step %d; nothing to resume", self.run_dir, self.state.total_steps)
            return done
        self.logger.open(RunInfo(self.run_dir, "train", self.group, self.name, self.config,
                                 resume_step=self.state.total_steps + 1 if resumed else None))
        failed = True
        try:
            # sampler indices (and so their seeds) are global: rank r steps r·K … r·K + K − 1
            first = {"first_index": self.ranks.rank * m.num_samplers} if self.ranks.active else {}
            with self.factory.train_samplers(m.num_samplers, m.num_workers, self.seed, m.start_method,
                                             m.worker_timeout_s, **first) as samplers, \
                    StopFlag() as stop, TrainProgress(self.pipeline.total_steps, self.state.total_steps, main) as bar:
                last_valid = self._start(samplers)
                while self._advance_stage():
                    self._iterate(samplers, bar)
                    if self.state.total_steps - self.state.last_log_steps >= self.pipeline.metric_accumulate_interval:
                        self._log_window()
                    if self.state.total_steps - self.state.last_save_steps >= self.pipeline.save_interval:
                        last_valid = self._save_and_validate(samplers, final=self._finishing())
                        if self.ranks.broadcast_object(main and (self.run_dir / PRUNE).is_file()):
                            log.info("pruned by the tuner at step %d: stopping", self.state.total_steps)
                            break  # a tuning study's request (rl_core.tune), taken at this checkpoint
                        if self.ranks.broadcast_object(main and self._solved(last_valid)):
                            if main:
                                log.info("valid reward %.1f reached stop_at_valid_reward=%g at step %d%s: stopping",
                                         last_valid["reward"], self.pipeline.stop_at_valid_reward,
                                         self.state.total_steps,
                                         " (held-out episodes too)" if self.pipeline.confirm_on_heldout else "")
                            break
                    if self.ranks.any(stop.signum is not None):  # every rank stops at the same iteration
                        self._stop_on_signal(samplers, stop)
                if self.window.steps:
                    self._log_window()
                # the end's checkpoint, unless the last iteration's was it (and was validated, on rank 0)
                if self.ranks.any(self.state.last_save_steps != self.state.total_steps or (main and not last_valid)):
                    last_valid = self._save_and_validate(samplers, final=True)
                last_valid = self.ranks.broadcast_object(last_valid)
            self.logger.log_checkpoint(checkpoint_path(self.run_dir, self.state.total_steps), last_valid)
            failed = False
        finally:
            self.logger.close(failed=failed)
        if main:
            write_marker(self.run_dir, DONE, total_steps=self.state.total_steps, **last_valid)
        return last_valid

    def _start(self, samplers: Samplers) -> dict[str, float]:
        """Samplers reset, or restored from the checkpoint being resumed (validated now if the run died before
        validating it); the algorithm gets their observations. Returns that validation's summary, or {}."""
        m, main, last_valid = self.machine, self.ranks.main, {}
        resumed = self.resume_state is not None
        if resumed:  # a checkpoint holds every rank's sampler states, in rank order
            states = self.resume_state["samplers"]
            mine = states[self.ranks.rank * m.num_samplers:(self.ranks.rank + 1) * m.num_samplers]
            obs = samplers.load_state_dicts(mine if self.ranks.active else states)
        else:
            obs = samplers.reset()
        scheduled = resumed and self.resume_state.get("scheduled", True)
        self.resume_state = None
        entries = read_valid(self.run_dir / "valid.json")
        self._reached_solved = self.solved_reward is not None and any(
            e.get("reward", -math.inf) >= self.solved_reward for e in entries)
        if main and scheduled and self.state.total_steps not in {e.get("training_steps") for e in entries}:
            # the interrupted run saved its newest checkpoint but died before validating it
            last_valid = self._validate(checkpoint_path(self.run_dir, self.state.total_steps), final=self._finishing())
        self.algo.start(obs, self.state.rollouts)
        self.ranks.broadcast_parameters(self.model)
        if main and not resumed and self.pipeline.validate_initial_weights:
            self._validate(None)
        self.algo.schedule_to(self.state.total_steps)
        return last_valid

    def _iterate(self, samplers: Samplers, bar: TrainProgress) -> None:
        """One iteration of the algorithm: collect env steps, update, move the counters and the LR schedule."""
        stage = self.state.stage_index
        t0 = time.perf_counter()
        self.algo.collect(samplers, stage, self.window.episodes)
        t1 = time.perf_counter()
        losses = self.algo.update(stage)
        steps = self.algo.collected_steps(stage)
        if self.algo.rollout_fill is not None:
            self.window.fills.append(self.algo.rollout_fill)
        self.state.total_steps += steps
        self.state.stage_steps += steps
        self.state.rollouts += 1
        self.algo.schedule_to(self.state.total_steps)
        if losses is not None:
            self.window.losses.append(losses)
        self.window.steps += steps
        self.window.wall_s += time.perf_counter() - t0
        self._update_wall()
        self.window.collect_s += t1 - t0
        recent = [e["reward"] for e in self.window.episodes[-50:]]
        bar.update(self.state.total_steps, steps / (time.perf_counter() - t0), float(np.mean(recent)) if recent else None)

    def _stop_on_signal(self, samplers: Samplers, stop: StopFlag) -> None:
        signum = stop.signum or signal.SIGTERM
        path = self._save(samplers, scheduled=False)
        self.logger.mark_preempting()
        raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} at step {self.state.total_steps}; "
                                  f"saved {path}; continue with resume=true run_dir={self.run_dir}", signum,
                                  self.state.total_steps, stop.previous.get(signum))

    def _save_and_validate(self, samplers: Samplers, final: bool) -> dict[str, float]:
        """A checkpoint and its validation (rank 0; the other ranks hand in their sampler states and get {})."""
        path = self._save(samplers)
        return self._validate(path, final) if self.ranks.main else {}
