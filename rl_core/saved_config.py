"""Configs read back from a run folder or a checkpoint, which may come from someone else.

Such a config is turned into objects by ``hydra.utils.instantiate``, which imports and calls whatever its
``_target_``s name. So before anything is built, every ``_target_`` must be one this installation's own
configs build (any ``_target_`` in ``conf/``, or in the config this command composed), a torch optimizer or
LR scheduler class, or under a prefix the user trusts on the command line or in their own conf
(``trusted_targets=[mypkg.]``); a gymnasium ``module:Env-v0`` id must name a trusted module too. The file
being loaded can never widen that. Runs saved before a class moved load with its new name.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from rl_core.config_check import ConfigError

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Groups a training run's saved config holds.
RUN_GROUPS = ("env", "model", "algo", "pipeline", "machine", "logger")

# Where the classes a saved config names live now (old module prefix -> new); first match wins.
MOVED_TARGETS = {
    "rl_core.ppo.PPOLoss": "rl_core.algo.ppo.PPO",  # the loss became the algorithm on the run loop (same keys)
    "rl_core.algo.ppo.PPOLoss": "rl_core.algo.ppo.PPO",
    "envs.tasks.EnvPoolTaskFactory": "envs.envpool_backend.EnvPoolTaskFactory",
    "envs.tasks.": "envs.factory.",
    "rl_core.ppo.": "rl_core.algo.ppo.",
    "rl_core.pipeline.": "rl_core.algo.pipeline.",
    "rl_core.schedules.": "rl_core.algo.schedules.",
    "rl_core.loggers.": "rl_core.tracking.loggers.",
    "rl_core.selection.": "rl_core.eval.selection.",
    "rl_core.report.": "rl_core.tracking.report.",
}
_TORCH_CLASS = re.compile(r"^torch\.optim\.(lr_scheduler\.)?[A-Z]\w*$")
_TARGET_LINE = re.compile(r"^\s*-?\s*_target_:\s*([\w.]+)\s*$", re.M)


def _nodes_with_targets(node: Any, path: str = ""):
    """``(key path, node)`` of every config node with a ``_target_``, depth first."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path or "<root>", node
        for key in node:
            yield from _nodes_with_targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif OmegaConf.is_list(node):
        for i, item in enumerate(node):
            yield from _nodes_with_targets(item, f"{path}[{i}]")


def upgrade_targets(cfg: DictConfig, source: Path | str) -> DictConfig:
    """Rename the ``_target_``s of a config saved before its classes moved (``MOVED_TARGETS``), in place."""
    moved = []
    for _, node in _nodes_with_targets(cfg):
        target = node._target_
        for old, new in MOVED_TARGETS.items():
            if isinstance(target, str) and target.startswith(old):
                node._target_ = new + target[len(old):]
                moved.append(target)
                break
    if moved:
        log.info("%s names classes by their old module paths (%s); loading them from where they are now",
                 source, ", ".join(sorted(set(moved))))
    return cfg


def trusted_names(cfg: DictConfig) -> tuple[set[str], tuple[str, ...]]:
    """(exact ``_target_`` names, name prefixes) that this command trusts: every ``_target_`` of ``conf/``
    and of ``cfg`` (what this command composed, which the user chose), and ``cfg.trusted_targets``."""
    names = {m.group(1) for f in CONF_DIR.rglob("*.yaml") if "hydra" not in f.relative_to(CONF_DIR).parts
             for m in _TARGET_LINE.finditer(f.read_text())}
    names |= {str(node._target_) for _, node in _nodes_with_targets(cfg) if isinstance(node._target_, str)}
    return names, tuple(str(p) for p in (cfg.get("trusted_targets") or []))


def _is_torch_class(target: str) -> bool:
    """A torch optimizer or LR scheduler class (importing ``torch.optim`` runs nothing of the file's)."""
    if not _TORCH_CLASS.match(target):
        return False
    import torch
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001 - not there: not trusted
        return False
    return inspect.isclass(obj) and issubclass(obj, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))


def check_trusted(cfg: DictConfig, source: Path | str, trusted: tuple[set[str], tuple[str, ...]]) -> None:
    """Refuse a saved config that would build anything but trusted classes, naming the key and the target."""
    names, prefixes = trusted
    hint = ("; if you trust it, allow it on the command line with trusted_targets=[PREFIX] "
            "(a module prefix such as mypkg.)")
    for path, node in _nodes_with_targets(cfg):
        target = node._target_
        if not isinstance(target, str) or not (target in names or target.startswith(prefixes)
                                                or _is_torch_class(target)):
            raise ConfigError(f"{path}._target_: {source} asks to build {target!r}, which is not one of this "
                              f"project's configured classes; refused{hint}")
    env_id = OmegaConf.select(cfg, "env.env_id")
    if isinstance(env_id, str) and ":" in env_id:
        module = env_id.split(":", 1)[0]
        if not (module + ".").startswith(prefixes) and module not in prefixes:
            raise ConfigError(f"env.env_id: {source} names {env_id!r}, which imports module {module!r}; "
                              f"refused{hint}")


def _first_line(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    text = getattr(e, "problem", None) or str(e)
    return where + (str(text).strip().splitlines() or [type(e).__name__])[0]


def saved_config(data: Any, source: Path | str, trusted: tuple[set[str], tuple[str, ...]]) -> DictConfig:
    """A training run's config from ``data`` (a dict, e.g. a checkpoint's), renamed and checked."""
    if not isinstance(data, (dict, DictConfig)):
        raise ConfigError(f"{source}: not the config of a training run (a mapping was expected)")
    cfg = OmegaConf.create(data) if isinstance(data, dict) else data
    missing = [g for g in RUN_GROUPS if not isinstance(cfg.get(g), DictConfig)]
    if missing:
        raise ConfigError(f"{source}: not the config of a training run (no {', '.join(missing)} group)")
    upgrade_targets(cfg, source)
    check_trusted(cfg, source, trusted)
    return cfg


def load_saved_config(path: Path, trusted: tuple[set[str], tuple[str, ...]]) -> DictConfig:
    """A run folder's ``config.yaml``; a file that is not one gives one line naming it."""
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, ValueError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it as a config ({_first_line(e)})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: not the config of a training run (a YAML mapping was expected)")
    return saved_config(cfg, path, trusted)
