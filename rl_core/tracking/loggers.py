"""Where metrics go: TensorBoard event files, Weights & Biases, or both (``conf/logger``).

Every logger gets the same calls from the trainer and the tester; the x-axis is always env steps summed
over samplers. A logger never stops training: W&B trouble (not installed, bad key, no network, service
timeout) prints one warning and that logger goes quiet while the run and its local outputs carry on.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """What a logger needs to know about the job it records.

    Args:
        run_dir: the job's folder (Hydra's job dir).
        job_type: ``train``, ``test`` or ``report``.
        group: the sweep this job belongs to (its multirun dir), or None for a single run.
        name: a readable run name: the group plus the job's overrides.
        config: the resolved run config.
        resume_step: on resume, the first env step the continued run logs; points the interrupted run
            wrote at or after it are dropped where the backend allows (TensorBoard).
    """

    run_dir: Path
    job_type: str = "train"
    group: str | None = None
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    resume_step: int | None = None


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

    def open(self, info: RunInfo) -> None:
        """Start writing; on resume, TensorBoard drops points at or after ``resume_step`` written by
        the interrupted run, so curves have no duplicates."""
        from torch.utils.tensorboard import SummaryWriter  # imported late: TensorBoard is slow to import

        self.writer = SummaryWriter(str(Path(info.run_dir) / self.subdir), flush_secs=self.flush_secs,
                                    purge_step=info.resume_step)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_video(self, tag: str, mp4: Path, gif: bytes, shape: tuple[int, ...], step: int) -> None:
        """An animated GIF in TensorBoard's image tab (what ``add_video`` writes, without moviepy)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=shape[0], width=shape[1], colorspace=3, encoded_image_string=gif)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def log_report(self, markdown: str, table: list[dict[str, Any]], image: Path | None) -> None:
        self.writer.add_text("report", markdown)

    def log_checkpoint(self, path: Path, summary: dict[str, float]) -> None:
        pass  # the checkpoint is already in the run dir, next to the event files

    def mark_preempting(self) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


WANDB_MODES = ("auto", "online", "offline", "disabled")
RUN_FILE = "wandb_run.json"  # in the job dir: the W&B run id, so a resumed job continues the same run


def _wandb_reachable(timeout_s: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except OSError:
        return False


def _wandb_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger:
    """One W&B run per Hydra job, always finished; resumed jobs continue the same run.

    Args:
        project / entity: where the runs go (entity null: the key's default).
        mode: ``auto`` (online when an API key is set up and W&B is reachable, else offline; an exported
            ``WANDB_MODE`` wins), ``online``, ``offline`` (upload later with ``wandb sync``) or ``disabled``.
        tags: run tags.
        group / name: override the sweep-derived group (the multirun dir) and name (group + overrides).
        log_model: upload the final checkpoint as a ``model`` artifact.
        init_timeout_s: how long ``wandb.init`` may wait for the W&B service before giving up
            (many jobs starting at once can be slow); an online run that fails to start falls back to offline.
    """

    def __init__(self, project: str = "rl-launcher", entity: str | None = None, mode: str = "auto",
                 tags: list[str] | None = None, group: str | None = None, name: str | None = None,
                 log_model: bool = False, init_timeout_s: float = 120.0) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"mode: must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        if init_timeout_s <= 0:
            raise ValueError(f"init_timeout_s: must be > 0, got {init_timeout_s}")
        self.project, self.entity, self.mode, self.tags = project, entity, mode, list(tags or [])
        self.group, self.name, self.log_model, self.init_timeout_s = group, name, log_model, init_timeout_s
        self.run: Any = None
        self.wandb: Any = None

    def _warn(self, what: str, error: BaseException) -> None:
        log.warning("W&B %s failed (%s: %s); W&B logging is off for this job, local outputs are unaffected",
                    what, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        self.run = None

    def _mode(self) -> str:
        if self.mode == "online" and not _wandb_reachable():  # else wandb.init waits init_timeout_s for nothing
            log.warning("W&B online start failed (server %s unreachable); recording offline instead (upload "
                        "later with `wandb sync`)", os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
            return "offline"
        if self.mode != "auto":
            return self.mode
        if os.environ.get("WANDB_MODE"):
            return os.environ["WANDB_MODE"]
        if not _wandb_key_present():
            log.info("W&B: no API key set up; recording offline (upload later with `wandb sync`)")
            return "offline"
        if not _wandb_reachable():
            log.info("W&B: service unreachable; recording offline (upload later with `wandb sync`)")
            return "offline"
        return "online"

    def open(self, info: RunInfo) -> None:
        if self.mode == "disabled":
            return
        try:
            self._open(info)
        except Exception as e:  # noqa: BLE001 - any W&B failure must leave training running
            self._warn("start", e)

    def _open(self, info: RunInfo) -> None:
        try:
            import wandb
        except ImportError as e:
            self._warn("import", e)
            return
        self.wandb = wandb
        run_file = Path(info.run_dir) / RUN_FILE
        saved = json.loads(run_file.read_text()) if run_file.is_file() else {}
        group = self.group or saved.get("group") or info.group
        name = self.name or saved.get("name") or info.name
        run_id = saved.get("id") or uuid.uuid4().hex[:8]
        mode = self._mode()
        kwargs = dict(project=self.project, entity=self.entity, group=group, name=name, job_type=info.job_type,
                      tags=self.tags, config=info.config, dir=str(info.run_dir), id=run_id, resume="allow",
                      settings=wandb.Settings(init_timeout=self.init_timeout_s, silent=True))
        if mode == "online":
            try:
                self.run = wandb.init(mode="online", **kwargs)
            except Exception as e:  # noqa: BLE001 - no network, bad key, service timeout: keep the run offline
                log.warning("W&B online start failed (%s: %s); recording offline instead",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                wandb.teardown()  # the failed attempt still holds the run id
                mode = "offline"
        if self.run is None:
            try:
                self.run = wandb.init(mode=mode, **kwargs)
            except Exception as e:  # noqa: BLE001
                self._warn(f"init ({mode})", e)
                return
        run_file.write_text(json.dumps({"id": run_id, "group": group, "name": name, "project": self.project}) + "\n")
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")
        log.info("W&B run %s (%s, %s)%s", run_id, mode, name or "", f": {self.run.url}" if mode == "online" else
                 f"; upload with `wandb sync {info.run_dir}/wandb/offline-run-*`" if mode == "offline" else "")

    def _log(self, data: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({"env_steps": step, **data})
        except Exception as e:  # noqa: BLE001
            self._warn("log", e)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._log(scalars, step)

    def log_video(self, tag: str, mp4: Path, gif: bytes, shape: tuple[int, ...], step: int) -> None:
        if self.run is not None:
            self._log({tag: self.wandb.Video(str(mp4), format="mp4")}, step)

    def log_report(self, markdown: str, table: list[dict[str, Any]], image: Path | None) -> None:
        if self.run is None or not table:
            return
        data: dict[str, Any] = {"report/table": self.wandb.Table(columns=list(table[0]),
                                                                 data=[list(r.values()) for r in table])}
        if image is not None:
            data["report/curves"] = self.wandb.Image(str(image))
        try:
            self.run.log(data)
        except Exception as e:  # noqa: BLE001
            self._warn("report", e)

    def log_checkpoint(self, path: Path, summary: dict[str, float]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update({f"final/{k}": v for k, v in summary.items()})
            if self.log_model:
                artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model", metadata=summary)
                artifact.add_file(str(path))
                self.run.log_artifact(artifact, aliases=["latest", path.stem])
        except Exception as e:  # noqa: BLE001
            self._warn("checkpoint upload", e)

    def mark_preempting(self) -> None:
        if self.run is not None:
            try:
                self.run.mark_preempting()
            except Exception as e:  # noqa: BLE001
                self._warn("mark_preempting", e)

    def close(self, failed: bool = False) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=1 if failed else 0)
        except Exception as e:  # noqa: BLE001
            self._warn("finish", e)


class LoggerSet:
    """TensorBoard and W&B together (``logger=tb_wandb``): every call goes to each one that is set."""

    def __init__(self, tensorboard: TensorBoardLogger | None = None, wandb: WandbLogger | None = None) -> None:
        self.loggers = [lg for lg in (tensorboard, wandb) if lg is not None]
        if not self.loggers:
            raise ValueError("tensorboard: give at least one of tensorboard, wandb")

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method == "loggers":
            raise AttributeError(method)

        def call_all(*args: Any, **kwargs: Any) -> None:
            for lg in self.loggers:
                getattr(lg, method)(*args, **kwargs)
        return call_all


class SilentLogger:
    """Takes every logger call and writes nothing: the loggers of ranks above 0 (rank 0 logs the run)."""

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: None


Logger = TensorBoardLogger | WandbLogger | LoggerSet | SilentLogger
