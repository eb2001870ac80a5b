"""On-policy training: collect a rollout, compute returns, update, log, checkpoint, validate.

Steps are env steps summed over samplers: one rollout is ``num_steps × num_samplers`` of them.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.factory import GymTaskFactory
from envs.samplers import Samplers
from rl_core.algo.compiled import CompiledLoss
from rl_core.algo.pipeline import StageSettings, TrainingPipeline
from rl_core.algo.ppo import PPOLoss, ppo_update, prepare_advantages
from rl_core.algo.reward_scaling import RewardScaler
from rl_core.algo.schedules import EnvStepLR, LinearDecay
from rl_core.algo.storage import RolloutStorage
from rl_core.checkpoint import (CheckpointError, checkpoint_path, list_checkpoints, load_checkpoint,
                                load_model_weights, remove_stale_temporaries, save_checkpoint)
from rl_core.config_check import ConfigError
from rl_core.distributed import Ranks, StragglerCutoff
from rl_core.eval.evaluation import METRICS, fixed_tasks, play_tasks, summarize
from rl_core.machine import Machine
from rl_core.markers import DONE, read_marker, write_marker
from rl_core.tracking.loggers import Logger, RunInfo
from rl_core.tracking.progress import TrainProgress
from rl_core.tracking.report import read_valid

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; ``resume=true`` continues it.

    ``handler`` is whatever handled ``signum`` before training took it over (submitit's requeue on
    SIGUSR2, for one): the launcher hands the signal on once the checkpoint is safe.
    """

    def __init__(self, message: str, signum: int, steps: int, handler: Any = None) -> None:
        super().__init__(message)
        self.signum, self.steps, self.handler = signum, steps, handler


@dataclass
class TrainState:
    """Counters saved in every checkpoint; all in env steps summed over samplers unless named otherwise."""

    total_steps: int = 0
    stage_index: int = 0
    stage_steps: int = 0
    rollouts: int = 0
    last_save_steps: int = 0
    last_log_steps: int = 0
    wall_s: float = 0.0  # seconds in train(), validation included, summed over resumes


class MetricWindow:
    """Episode metrics and loss terms accumulated between two train-log points."""

    def __init__(self) -> None:
        self.episodes: list[dict[str, float]] = []
        self.losses: list[dict[str, float]] = []
        self.steps = 0
        self.wall_s = 0.0
        self.collect_s = 0.0
        self.fills: list[float] = []  # with a straggler cut-off: steps collected / a whole rollout's, per rollout

    def summary(self, lr: float, stage: int) -> dict[str, float]:
        out = {f"train/{k}": float(np.mean([e[k] for e in self.episodes])) for k in METRICS if self.episodes}
        for k in self.losses[0] if self.losses else ():
            name = "train/total_loss" if k == "total_loss" else f"train/ppo_loss/{k}"
            out[name] = float(np.mean([d[k] for d in self.losses]))
        out["train/lr"] = lr
        out["train/pipeline_stage"] = float(stage)
        out["train/approx_fps"] = self.steps / max(self.wall_s, 1e-9)
        out["train/env_steps_per_s"] = self.steps / max(self.collect_s, 1e-9)
        if self.fills:
            out["train/rollout_fill"] = float(np.mean(self.fills))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "losses": self.losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes, self.losses = list(state["episodes"]), list(state["losses"])


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C: training quits at once, without the checkpoint the first one asked for."""


class StopFlag:
    """SIGINT, SIGTERM and SIGUSR2 (SLURM/submitit: time limit or preemption ahead) ask for a checkpoint at
    the next rollout boundary; a second SIGINT stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for s in self.SIGNALS:
            try:
                self.previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. some launchers): no handler
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise TrainingAborted
        self.signum = signum
        log.warning("%s received: saving a checkpoint after this rollout (Ctrl-C again to quit now)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class Trainer:
    """Trains ``model`` with the losses and stages of ``pipeline`` on tasks from ``task_factory``.

    Args:
        run_dir: the job's folder: checkpoints, TensorBoard events and ``valid.json`` go here.
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

    def __init__(self, run_dir: Path, task_factory: GymTaskFactory, model: torch.nn.Module, loss: PPOLoss,
                 pipeline: TrainingPipeline, machine: Machine, logger: Logger, seed: int,
                 config: dict[str, Any], resume: bool = False, init_weights: str | None = None,
                 group: str | None = None, name: str | None = None, solved_reward: float | None = None,
                 ranks: Ranks | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.ranks = ranks or Ranks()
        self.solved_reward = solved_reward
        self._reached_solved = False  # a validation reached solved_reward (set from valid.json on resume)
        self.factory, self.loss, self.pipeline, self.machine, self.logger = task_factory, loss, pipeline, machine, logger
        self.seed, self.config, self.group, self.name = seed, config, group, name
        self.device = machine.device
        self.model = model.to(self.device)
        for i, stage in enumerate(pipeline.stages):
            unknown = set(stage.loss_names or []) - {loss.name}
            if unknown:
                raise ConfigError(f"pipeline.stages[{i}].loss_names: unknown loss {sorted(unknown)}; "
                                 f"available: ['{loss.name}']")
            if (machine.sync_frac is not None and pipeline.settings(i).minibatch_size is not None
                    and pipeline.settings(i).minibatch_size * machine.min_rollout_frac < 2):
                raise ConfigError(f"pipeline.stages[{i}]: minibatch_size={pipeline.settings(i).minibatch_size} is "
                                  f"too small for machine.min_rollout_frac={machine.min_rollout_frac}: a cut "
                                  "rollout could leave a minibatch empty")
            mb = pipeline.settings(i).num_mini_batch
            # minibatches split by sampler need one sampler each at least
            if pipeline.settings(i).minibatch_size is None and mb > machine.num_samplers:
                raise ConfigError(f"pipeline.stages[{i}]: num_mini_batch={mb} exceeds machine.num_samplers="
                                 f"{machine.num_samplers}; minibatches split the rollout by sampler")
        self.update_loss = CompiledLoss(loss) if machine.compile else loss
        try:  # a value the library rejects (lr < 0): one line naming the key
            self.optimizer = pipeline.optimizer(self.model.parameters())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"pipeline.optimizer: {e}") from None
        try:
            self.scheduler = pipeline.lr_scheduler(self.optimizer) if pipeline.lr_scheduler else None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"pipeline.lr_scheduler: {e}") from None
        if isinstance(self.scheduler, EnvStepLR):
            for fn in self.scheduler.lr_lambdas:
                if isinstance(fn, LinearDecay) and fn.steps is None:
                    fn.steps = pipeline.total_steps
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.reward_scaler = (RewardScaler(machine.num_samplers, pipeline.reward_clip)
                              if pipeline.reward_scaling else None)
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
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("lr_scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.state = TrainState(**ckpt["state"])
        self.generator.set_state(ckpt["generator"])
        if self.reward_scaler is not None:
            if ckpt.get("reward_scaler") is None:
                raise CheckpointError(f"{path} was saved without reward scaling; resume it with "
                                      "pipeline.reward_scaling=false, or start a new run")
            scaler = ckpt["reward_scaler"]
            if self.ranks.active:  # the running returns of every rank's samplers, in rank order: this rank's block
                k = self.machine.num_samplers
                scaler = {**scaler, "returns": scaler["returns"][self.ranks.rank * k:(self.ranks.rank + 1) * k]}
            self.reward_scaler.load_state_dict(scaler)
        self.window.load_state_dict(ckpt["window"])
        log.info("resuming %s at step %d", path, self.state.total_steps)

    def _save(self, samplers: Samplers, scheduled: bool = True) -> Path | None:
        """Write a checkpoint (rank 0, with every rank's sampler states). ``scheduled=False`` (a save on a
        signal) leaves the save schedule as it was, so a resumed run checkpoints and validates at the same
        steps as an uninterrupted one. Returns its path on rank 0, None on the others."""
        scaler = self.reward_scaler
        # every rank takes part: its samplers' states and its samplers' running returns
        gathered = self.ranks.gather_objects((samplers.state_dicts(), scaler.returns if scaler else None))
        if scheduled:
            self.state.last_save_steps = self.state.total_steps
        if not self.ranks.main:
            return None
        all_states = [s for states, _ in gathered for s in states]
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "state": asdict(self.state),
            "generator": self.generator.get_state(),
            "reward_scaler": ({**scaler.state_dict(), "returns": torch.cat([r for _, r in gathered])}
                              if scaler is not None else None),
            "samplers": all_states,
            "window": self.window.state_dict(),
            "config": self.config,
            "seed": self.seed,
            "scheduled": scheduled,
        }
        return save_checkpoint(state, checkpoint_path(self.run_dir, self.state.total_steps))

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

    @torch.no_grad()
    def _collect(self, samplers: Samplers, storage: RolloutStorage, settings: StageSettings,
                 cutoff: StragglerCutoff | None = None) -> RolloutStorage:
        """Fill ``storage`` with ``T`` steps of all samplers, acting with Normal(mean, std) samples; returns
        it, or with ``cutoff`` the first ``T' ≤ T`` steps when the straggler cut-off ended the rollout early.

        The per-step loop is dispatch-bound (8-row batches), so it does as few torch calls as it can: the
        rollout's noise is drawn in one call (the same numbers as one draw per step when ``N·A`` is a
        multiple of 16), the old log-probs are computed once at the end, and on the CPU the env results
        go into the storage through numpy views.
        """
        buf = samplers.buf
        model, dev = self.model, self.device
        if self.ranks.active:  # every rank draws the noise of all samplers and takes its own block
            T, N, A = storage.actions.shape
            noise = torch.randn((T, N * self.ranks.world, A), generator=self.generator, device=dev)
            noise = noise[:, self.ranks.rank * N:(self.ranks.rank + 1) * N]
        else:
            noise = torch.randn(storage.actions.shape, generator=self.generator, device=dev)
        host = dev.type == "cpu"
        if host:
            rewards, terminated, truncated, obs_np = (x.numpy() for x in (storage.rewards, storage.terminated,
                                                                        storage.truncated, storage.obs))
        steps = storage.num_steps
        for t in range(storage.num_steps):
            mean, value = model(storage.obs[t])
            storage.means[t] = mean
            storage.values[t] = value
            action = model.sample(mean, noise=noise[t], out=storage.actions[t])
            self.window.episodes += samplers.step(action.numpy() if host else action.cpu().numpy())
            if host:
                rewards[t], terminated[t], truncated[t] = buf.reward, buf.terminated, buf.truncated
                obs_np[t + 1] = buf.obs
            else:
                storage.rewards[t] = torch.from_numpy(buf.reward).to(dev)
                storage.terminated[t] = torch.from_numpy(buf.terminated).to(dev)
                storage.truncated[t] = torch.from_numpy(buf.truncated).to(dev)
                storage.obs[t + 1] = torch.from_numpy(buf.obs).to(dev)
            if settings.bootstrap_truncation and buf.truncated.any():
                rows = torch.from_numpy(np.flatnonzero(buf.truncated)).to(dev)
                storage.final_values[t, rows] = model(torch.from_numpy(buf.final_obs).to(dev)[rows])[1]
            if cutoff is not None and t + 1 < storage.num_steps and cutoff.should_stop(t + 1):
                steps = t + 1
                break
        if cutoff is not None:
            cutoff.finished()
            storage = storage.prefix(steps) if steps < storage.num_steps else storage
        storage.log_probs.copy_(model.log_prob(storage.means, storage.actions))
        storage.values[-1] = model(storage.obs[-1])[1]
        storage.final_values.mul_(storage.truncated)
        return storage

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
        lr = self.optimizer.param_groups[0]["lr"]
        summary = self.window.summary(lr, self.state.stage_index)
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
        main = self.ranks.main
        for tmp in remove_stale_temporaries(self.run_dir) if main else []:
            log.info("removed %s, left by a checkpoint write that was killed", tmp)
        m = self.machine
        resumed = self.resume_state is not None
        done = read_marker(self.run_dir, DONE) if resumed else None
        if done is not None:
            log.info("%s already finished at step %d; nothing to resume", self.run_dir, self.state.total_steps)
            return done
        self.logger.open(RunInfo(self.run_dir, "train", self.group, self.name, self.config,
                                 resume_step=self.state.total_steps + 1 if resumed else None))
        last_valid: dict[str, float] = {}
        storage: RolloutStorage | None = None
        cutoff = (StragglerCutoff(self.ranks, m.sync_frac, m.min_rollout_frac, m.collective_timeout_s)
                  if self.ranks.active and m.sync_frac is not None else None)
        if m.sync_frac is not None and not self.ranks.active:
            log.warning("machine.sync_frac=%g cuts the rollouts of slow ranks; this run has one rank: no effect",
                        m.sync_frac)
        failed = True
        try:
            # sampler indices (and so their seeds) are global: rank r steps r·K … r·K + K − 1
            first = {"first_index": self.ranks.rank * m.num_samplers} if self.ranks.active else {}
            with self.factory.train_samplers(m.num_samplers, m.num_workers, self.seed, m.start_method,
                                             m.worker_timeout_s, **first) as samplers, \
                    StopFlag() as stop, TrainProgress(self.pipeline.total_steps, self.state.total_steps, main) as bar:
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
                    last_valid = self._validate(checkpoint_path(self.run_dir, self.state.total_steps),
                                                final=self._finishing())
                obs = torch.from_numpy(obs).to(self.device)
                self.ranks.broadcast_parameters(self.model)
                if main and not resumed and self.pipeline.validate_initial_weights:
                    self._validate(None)
                if self.scheduler is not None:
                    self.scheduler.step_to(self.state.total_steps)
                while self._advance_stage():
                    settings = self.pipeline.settings(self.state.stage_index)
                    if storage is None or storage.num_steps != settings.num_steps:
                        storage = RolloutStorage(settings.num_steps, m.num_samplers, obs.shape[-1],
                                                 self.model.action_dim, self.model.log_prob_dims, self.device)
                        storage.obs[0] = obs
                    t0 = time.perf_counter()
                    torch.set_num_threads(1)  # tiny batched inference; more threads only spin
                    if cutoff is not None:
                        cutoff.start(self.state.rollouts, settings.num_steps)
                    rollout = self._collect(samplers, storage, settings, cutoff)
                    t1 = time.perf_counter()
                    torch.set_num_threads(m.torch_threads)
                    across = self.ranks.sum if self.ranks.active else None  # normalisers' statistics: global
                    if self.reward_scaler is not None:
                        self.reward_scaler.scale_(rollout.rewards, torch.maximum(rollout.terminated, rollout.truncated),
                                                  settings.gamma, across)
                    prepare_advantages(rollout, self.loss, settings.gamma, settings.use_gae, settings.gae_lambda,
                                       settings.bootstrap_truncation, self.ranks)
                    losses = ppo_update(self.model, self.update_loss, self.optimizer, rollout, settings.update_repeats,
                                        settings.num_mini_batch, settings.max_grad_norm, self.generator,
                                        settings.minibatch_size, self.ranks.average_gradients)
                    if getattr(self.model, "obs_norm", None) is not None:
                        # after the update: collection and update of a rollout see the same statistics
                        self.model.obs_norm.update(rollout.obs[:-1], across)
                    rollout.start_next()
                    obs = storage.obs[0]
                    steps = settings.num_steps * m.num_samplers * self.ranks.world  # summed over every rank
                    if cutoff is not None:  # the ranks' rollouts as they were cut
                        steps_now = self.ranks.sum(torch.tensor([float(rollout.num_steps * m.num_samplers)],
                                                                dtype=torch.float64))
                        self.window.fills.append(float(steps_now.item()) / steps)
                        steps = int(steps_now.item())
                    self.state.total_steps += steps
                    self.state.stage_steps += steps
                    self.state.rollouts += 1
                    if self.scheduler is not None:
                        self.scheduler.step_to(self.state.total_steps)
                    self.window.losses.append(losses)
                    self.window.steps += steps
                    self.window.wall_s += time.perf_counter() - t0
                    self._update_wall()
                    self.window.collect_s += t1 - t0
                    recent = [e["reward"] for e in self.window.episodes[-50:]]
                    bar.update(self.state.total_steps, steps / (time.perf_counter() - t0),
                               float(np.mean(recent)) if recent else None)
                    if self.state.total_steps - self.state.last_log_steps >= self.pipeline.metric_accumulate_interval:
                        self._log_window()
                    if self.state.total_steps - self.state.last_save_steps >= self.pipeline.save_interval:
                        last_valid = self._save_and_validate(samplers, final=self._finishing())
                        if self.ranks.broadcast_object(main and self._solved(last_valid)):
                            if main:
                                log.info("valid reward %.1f reached stop_at_valid_reward=%g at step %d%s: stopping",
                                         last_valid["reward"], self.pipeline.stop_at_valid_reward,
                                         self.state.total_steps,
                                         " (held-out episodes too)" if self.pipeline.confirm_on_heldout else "")
                            break
                    if self.ranks.any(stop.signum is not None):  # every rank stops at the same rollout
                        signum = stop.signum or signal.SIGTERM
                        path = self._save(samplers, scheduled=False)
                        self.logger.mark_preempting()
                        raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} at step "
                                                  f"{self.state.total_steps}; saved {path}; continue with "
                                                  f"resume=true run_dir={self.run_dir}", signum,
                                                  self.state.total_steps, stop.previous.get(signum))
                if self.window.steps:
                    self._log_window()
                # the end's checkpoint, unless the last rollout's was it (and was validated, on rank 0)
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

    def _save_and_validate(self, samplers: Samplers, final: bool) -> dict[str, float]:
        """A checkpoint and its validation (rank 0; the other ranks hand in their sampler states and get {})."""
        path = self._save(samplers)
        return self._validate(path, final) if self.ranks.main else {}
