"""A search space written as Hydra sweep overrides (as hydra-optuna-sweeper wrote it), as Optuna distributions:

    interval(1e-4, 3e-3)           FloatDistribution(1e-4, 3e-3)
    tag(log, interval(1e-4, 3e-3)) the same on a log scale
    int(interval(4, 32))           IntDistribution(4, 32)
    range(1, 9, 2)                 IntDistribution(1, 7, step=2)  (Python's range: the end is left out)
    choice(64, 128, 256)           CategoricalDistribution((64, 128, 256))
"""

from __future__ import annotations

import difflib
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, OmegaConf

from rl_core.config_check import ConfigError


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in [f"{prefix}{key}", *_all_keys(v, f"{prefix}{key}.")]]
    if isinstance(node, list):
        return [k for i, v in enumerate(node) for k in [f"{prefix}{i}", *_all_keys(v, f"{prefix}{i}.")]]
    return []


def _distribution(key: str, text: str) -> optuna.distributions.BaseDistribution:
    try:
        override = OverridesParser.create().parse_override(f"{key}={text}")
    except Exception as e:  # Hydra's grammar error: its first line says where
        raise ConfigError(f"{key} (search space): cannot read {text!r}: {str(e).splitlines()[0]}") from None
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = tuple(value.list)
        if len(choices) < 2:
            raise ConfigError(f"{key} (search space): choice() needs at least two values, got {text!r}")
        return optuna.distributions.CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(range(int(value.start), int(value.stop), int(value.step or 1)))
        if len(values) < 2:
            raise ConfigError(f"{key} (search space): {text} holds {len(values)} value(s): an empty range")
        return optuna.distributions.IntDistribution(values[0], values[-1], step=int(value.step or 1))
    if isinstance(value, IntervalSweep):
        if not value.start < value.end:
            raise ConfigError(f"{key} (search space): {text} is an empty range (its start is not below its end)")
        log = "log" in value.tags
        if log and value.start <= 0:
            raise ConfigError(f"{key} (search space): a log scale needs a start above 0, got {text!r}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(int(value.start), int(value.end), log=log)
        return optuna.distributions.FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{key} (search space): {text!r} is not a range to search: write interval(a, b), "
                      "tag(log, interval(a, b)), int(interval(a, b)), range(a, b[, step]) or choice(a, b, ...)")


def search_space(params: dict[str, str], cfg: DictConfig) -> dict[str, optuna.distributions.BaseDistribution]:
    """``{key: distribution}`` in the order given; a key that is not in the composed run config ``cfg`` is
    refused, naming it and the closest key."""
    if not params:
        raise ConfigError("hydra.sweeper.params: the search space is empty (name a key and its range, e.g. "
                          "hydra.sweeper.params.pipeline.optimizer.lr='tag(log, interval(1e-4, 3e-3))')")
    known = _all_keys(OmegaConf.to_container(cfg, resolve=False))
    space = {}
    for key, text in params.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{key} (search space): not a key of the run config"
                              + (f" (did you mean {close[0]}?)" if close else ""))
        space[key] = _distribution(key, str(text))
    return space


def describe(space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, str]:
    """The space as JSON text a study keeps, to refuse a study folder of another space."""
    return {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()}


def start_values(space: dict[str, optuna.distributions.BaseDistribution], cfg: DictConfig, where: str,
                 params: dict[str, str]) -> dict[str, Any]:
    """The values ``cfg`` gives the searched keys: a warm-start trial. A value outside its range is refused
    (``where`` names the config that set it), so the first trial is the start itself, not something near it."""
    values = {key: OmegaConf.select(cfg, key) for key in space}
    for key, dist in space.items():
        try:
            inside = dist._contains(dist.to_internal_repr(values[key]))
        except (ValueError, TypeError):
            inside = False
        if not inside:
            raise ConfigError(f"{key} (search space): {where} sets it to {values[key]!r}, outside {params[key]}; a "
                              "warm-start trial must lie in the search space (widen it, or override the value)")
    return values


def overrides_of(params: dict[str, Any]) -> list[str]:
    """A trial's parameters as Hydra overrides (floats in full, so a rerun trains the same numbers)."""
    return [f"{k}={repr(v) if isinstance(v, float) else v}" for k, v in params.items()]
