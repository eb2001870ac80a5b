"""Signals during training: a checkpoint at the next iteration boundary, then a clean stop."""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; ``resume=true`` continues it.

    ``handler`` is whatever handled ``signum`` before training took it over (submitit's requeue on
    SIGUSR2, for one): the launcher hands the signal on once the checkpoint is safe.
    """

    def __init__(self, message: str, signum: int, steps: int, handler: Any = None) -> None:
        super().__init__(message)
        self.signum, self.steps, self.handler = signum, steps, handler


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C: training quits at once, without the checkpoint the first one asked for."""


class StopFlag:
    """SIGINT, SIGTERM and SIGUSR2 (SLURM/submitit: time limit or preemption ahead) ask for a checkpoint at
    the next iteration boundary (a rollout, for PPO); a second SIGINT stops at once."""

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
        log.warning("%s received: saving a checkpoint after this iteration (Ctrl-C again to quit now)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
