"""Where scalars go: TensorBoard event files in the run dir (``conf/logger``)."""

from __future__ import annotations

from pathlib import Path


class TensorBoardLogger:
    """Writes scalars with env steps (summed over samplers) as the x-axis.

    Args:
        subdir: folder inside the run dir for the event files.
        flush_secs: how often pending events reach disk.
    """

    def __init__(self, subdir: str = "tb", flush_secs: int = 10) -> None:
        if flush_secs <= 0:
            raise ValueError(f"flush_secs: must be > 0, got {flush_secs}")
        self.subdir, self.flush_secs = subdir, flush_secs
        self.writer = None

    def open(self, run_dir: Path, resume_step: int | None = None) -> None:
        """Start writing; on resume, TensorBoard drops points at or after ``resume_step`` written by
        the interrupted run, so curves have no duplicates."""
        from torch.utils.tensorboard import SummaryWriter  # imported late: TensorBoard is slow to import

        self.writer = SummaryWriter(str(Path(run_dir) / self.subdir), flush_secs=self.flush_secs,
                                    purge_step=resume_step)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_gif(self, tag: str, gif: bytes, shape: tuple[int, ...], step: int) -> None:
        """An animated GIF in TensorBoard's image tab (what ``add_video`` writes, without moviepy)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=shape[0], width=shape[1], colorspace=3, encoded_image_string=gif)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
