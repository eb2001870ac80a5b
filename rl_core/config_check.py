"""Start-up checks of a composed config against the classes it builds.

Every node with a ``_target_`` is checked against that target's signature: a key the target does
not take, or a value of the wrong type for its annotation, fails before anything runs, with the
key's full name, what was given and what is allowed. The class signature is the schema, so the
YAML and the code cannot drift apart.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the key's full name."""


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Whether a plain (container-converted) config value fits annotation ``tp``."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(v, args[1]) for v in value.values())
    if origin is collections.abc.Callable or tp is collections.abc.Callable:
        return True  # built by a nested _target_, checked there
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # annotations we do not model are not checked


def check_node(node: Any, path: str) -> None:
    """Check ``node`` (any config subtree) and every ``_target_`` node below it."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_node(item, f"{path}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    if "_target_" not in node:
        for key in node:
            check_node(node._get_node(key), f"{path}.{key}" if path else str(key))
        return
    target_name = node._target_
    try:
        target = get_object(target_name)
    except Exception as e:
        raise ConfigError(f"{path}._target_: cannot import {target_name!r} ({e})") from None
    init = target.__init__ if inspect.isclass(target) else target
    params = inspect.signature(target).parameters
    try:
        hints = typing.get_type_hints(init)
    except Exception:
        hints = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key in node:
        if key in HYDRA_KEYS:
            continue
        full = f"{path}.{key}" if path else str(key)
        if key not in params and not takes_any:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{full}: unknown key for {target_name}; {hint}allowed: {', '.join(allowed)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and "_target_" in child or isinstance(child, ListConfig) and any(
                isinstance(c, DictConfig) and "_target_" in c for c in child):
            check_node(child, full)
            continue
        value = OmegaConf.to_container(child, resolve=True) if isinstance(child, (DictConfig, ListConfig)) \
            else node[key]
        tp = hints.get(key, params[key].annotation if key in params else Any)
        if not _matches(value, tp):
            raise ConfigError(f"{full}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def check_config(cfg: DictConfig, groups: list[str]) -> None:
    """Check the ``_target_`` trees of the given top-level ``groups``."""
    for group in groups:
        if group not in cfg:
            raise ConfigError(f"{group}: missing from the config")
        check_node(cfg._get_node(group), group)
