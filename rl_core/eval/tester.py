"""Test mode: evaluate chosen checkpoints of a finished run on the fixed test tasks, with videos."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from envs.factory import GymTaskFactory
from rl_core.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from rl_core.eval.evaluation import fixed_tasks, play_tasks, summarize
from rl_core.eval.selection import TestSelection
from rl_core.eval.video import GridClip
from rl_core.machine import Machine
from rl_core.tracking.loggers import Logger, RunInfo

log = logging.getLogger(__name__)


class Tester:
    """Evaluates checkpoints and writes into ``out_dir`` (never into the training run's own files):
    ``test.json`` (one entry per checkpoint), ``video_<steps>.mp4`` and TensorBoard ``test/*``.
    """

    def __init__(self, out_dir: Path, factory: GymTaskFactory, model: torch.nn.Module, machine: Machine,
                 selection: TestSelection, logger: Logger, seed: int,
                 run_info: RunInfo | None = None) -> None:
        self.out_dir, self.factory, self.model, self.machine = Path(out_dir), factory, model, machine
        self.selection, self.logger, self.seed = selection, logger, seed
        self.run_info = run_info or RunInfo(self.out_dir, "test")
        self.device = machine.device
        self.tasks = fixed_tasks(factory, selection.episodes, machine.test_samplers)
        self.tag = "test" if selection.episodes == "test" else selection.episodes  # TensorBoard: test/*, heldout/*
        self.can_film = True

    def _probe_rendering(self) -> bool:
        """Whether the env renders here; if not, warn once: test mode then writes no videos, nothing else changes."""
        try:
            sampler = self.factory.make_fixed([0], render=True)
            try:
                sampler.reset()
                frame = sampler.render()
            finally:
                sampler.close()
            if frame is None:
                raise RuntimeError("render() returned no frame")
            return True
        except Exception as e:  # noqa: BLE001 - any GL failure (no EGL/OSMesa library, no display) means no video
            log.warning("no videos: %s cannot render on this machine (%s: %s). On a headless Linux machine MuJoCo "
                        "needs Mesa's EGL (Debian: apt-get install libegl1 libegl-mesa0) with MUJOCO_GL=egl, "
                        "which launch.py sets when there is no display", self.factory.env_id, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
            return False

    def _test_one(self, steps: int, path: Path) -> dict[str, Any]:
        ckpt = load_checkpoint(path, self.device)
        load_model_weights(self.model, ckpt["model"], path)
        self.model.to(self.device).eval()
        training_steps = ckpt.get("state", {}).get("total_steps", steps)
        clip = None
        if self.selection.video and self.can_film:
            filmed = self.tasks[:self.selection.video_max_episodes]
            clip = GridClip([f"ep {i} seed {s}" for i, (_, s) in enumerate(filmed)], self.selection.video_max_frames)
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        t0 = time.perf_counter()
        episodes = play_tasks(self.model, self.factory, self.tasks, self.device, self.selection.deterministic,
                              generator, clip)
        summary = summarize(episodes)
        entry: dict[str, Any] = {"checkpoint": str(path), "training_steps": training_steps, **summary,
                                 "episode_set": self.selection.episodes,
                                 "deterministic": self.selection.deterministic, "episodes": episodes}
        self.logger.log_scalars({f"{self.tag}/{k}": v for k, v in summary.items()}, training_steps)
        if clip is not None and clip.frames:
            video = clip.write_mp4(self.out_dir / f"video_{training_steps:010d}.mp4", self.selection.video_fps)
            self.logger.log_video(f"{self.tag}/episode_vid", video, clip.gif_bytes(self.selection.video_fps),
                                  clip.frames[0].shape, training_steps)
            entry["video"] = str(video)
            entry["video_frames"] = len(clip.frames)
        log.info("test %s (%d steps): reward %.1f ± %.1f, success %.2f, ep_length %.0f over %d episodes (%.1f s)",
                 path.name, training_steps, summary["reward"], summary["reward_std"], summary["success"],
                 summary["ep_length"], len(episodes), time.perf_counter() - t0)
        return entry

    def run(self, checkpoints: list[tuple[int, Path]]) -> tuple[list[dict[str, Any]], list[str]]:
        """Test each checkpoint; a bad one is named and skipped. Returns (results, failures)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.selection.video:
            self.can_film = self._probe_rendering()
        torch.set_num_threads(1)  # batch-of-a-few inference: more threads only wait on each other
        self.logger.open(self.run_info)
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        completed = False
        try:
            for steps, path in checkpoints:
                try:
                    results.append(self._test_one(steps, path))
                except CheckpointError as e:
                    log.error("error: %s", e)
                    failures.append(str(e))
                (self.out_dir / "test.json").write_text(json.dumps(results, indent=1) + "\n")
            completed = True
        finally:
            self.logger.close(failed=not completed or bool(failures))
        self.print_summary(results, failures)
        return results, failures

    def print_summary(self, results: list[dict[str, Any]], failures: list[str]) -> None:
        table = Table(title=f"test: {len(self.tasks)} {self.selection.episodes} episodes per checkpoint, "
                            f"{'deterministic' if self.selection.deterministic else 'sampled'} actions")
        for col in ("checkpoint", "env steps", "reward (mean ± std)", "success", "ep_length"):
            table.add_column(col, justify="right")
        for r in results:
            table.add_row(Path(r["checkpoint"]).name, f"{r['training_steps']:,}",
                          f"{r['reward']:.1f} ± {r['reward_std']:.1f}", f"{r['success']:.2f}", f"{r['ep_length']:.0f}")
        for f in failures:
            table.add_row(f.split()[1] if f.startswith("checkpoint ") else "?", "-", "failed", "-", "-")
        Console(stderr=True, width=120).print(table)
        log.info("test results: %s", self.out_dir / "test.json")
