"""Things printed for people: the config tree at start, console log lines, and the job's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.logging import RichHandler
from rich.tree import Tree

GROUP_ORDER = ("env", "model", "algo", "pipeline", "machine", "logger")


def _add(tree: Tree, node: object) -> None:
    if isinstance(node, DictConfig):
        for key in node:
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and len(child):
                _add(tree.add(f"[bold]{key}"), child)
            else:
                tree.add(f"{key}: [cyan]{OmegaConf.to_yaml(child).strip() if isinstance(child, (DictConfig, ListConfig)) else node[key]!r}")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)):
                _add(tree.add(f"[bold][{i}]"), item)
            else:
                tree.add(f"[cyan]{item!r}")


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a tree, groups first, to stderr."""
    tree = Tree("[bold]config")
    keys = [k for k in GROUP_ORDER if k in cfg] + [k for k in cfg if k not in GROUP_ORDER]
    for key in keys:
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            _add(tree.add(f"[bold]{key}"), child)
        else:
            tree.add(f"{key}: [cyan]{cfg[key]!r}")
    Console(stderr=True).print(tree)


def console_log_handler() -> logging.Handler:
    """Log handler for the console: rich (stays above the progress bar) on a terminal, plain
    unwrapped lines on a pipe or a batch job's log file."""
    if sys.stderr.isatty():
        return RichHandler(show_path=False, console=Console(stderr=True))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s", "%H:%M:%S"))
    return handler


_PENDING: list["RunLogFile"] = []


class RunLogFile(logging.Handler):
    """The job's log file (``conf/hydra/job_logging``), opened only by :func:`open_run_logs`, once the command
    owns its folder: a command that is refused leaves no log in a folder it does not own. Lines logged
    before that are kept and written first."""

    def __init__(self, filename: str) -> None:
        super().__init__()
        self.filename = filename
        self.records: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None
        _PENDING.append(self)

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is not None:
            self.file.emit(record)
        elif len(self.records) < 100_000:
            record.msg, record.args = record.getMessage(), None  # formatted now, as it reads now
            self.records.append(record)

    def open(self, directory: Path | None = None) -> None:
        if directory is not None:
            self.filename = str(Path(directory) / Path(self.filename).name)
        Path(self.filename).parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(self.filename)
        self.file.setFormatter(self.formatter)
        for record in self.records:
            self.file.emit(record)
        self.records = []

    def close(self) -> None:
        if self in _PENDING:
            _PENDING.remove(self)
        if self.file is not None:
            self.file.close()
        super().close()


def open_run_logs(directory: Path | None = None) -> None:
    """Open the log files configured for this job (in ``directory`` instead of Hydra's job dir, if given)."""
    while _PENDING:
        _PENDING.pop(0).open(directory)
