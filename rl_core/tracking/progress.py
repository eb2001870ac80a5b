"""A progress display for long training: steps, steps/s, recent reward, ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """A live bar on a terminal; nothing on a pipe or a batch log (the trainer logs a line per metric window)."""

    def __init__(self, total_steps: int, start_steps: int = 0, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TextColumn("{task.fields[fps]:>6.0f} steps/s"), TextColumn("reward {task.fields[reward]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.enabled, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_steps, fps=0.0, reward="-")

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def update(self, steps: int, fps: float, reward: float | None) -> None:
        self.progress.update(self.task, completed=steps, fps=fps,
                             reward="-" if reward is None else f"{reward:7.1f}")

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
