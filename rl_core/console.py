"""Things printed for people: the config tree at start and one-line errors."""

from __future__ import annotations

import logging
import sys

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
