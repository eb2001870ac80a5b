"""The run config's rules beyond what each class checks: top-level keys, Hydra resolvers, and what a resume or
a test may change of a run's saved config (read through ``rl_core.saved_config``)."""

from __future__ import annotations

import atexit
import difflib
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from rl_core.config_check import ConfigError
from rl_core.saved_config import load_saved_config, trusted_names

log = logging.getLogger(__name__)

GROUPS = ["env", "model", "algo", "pipeline", "machine", "logger"]
# Groups a resumed run may change (where it runs, where it logs); the others come from the run's saved config.
RESUME_MAY_CHANGE = {"machine", "logger"}
# Keys of those groups that still come from the saved config: each sampler's episode stream is in the checkpoint.
RESUME_KEEPS = ("machine.num_samplers",)
MODES = ("train", "test", "report", "tune_worker")  # tune_worker: started by the rl_tune sweeper
_SCRATCH: set[Path] = set()
# Groups a test run may override on top of the training run's saved config.
TEST_MAY_CHANGE = ("env", "model", "machine", "logger")

# -- Hydra resolvers (conf/config.yaml, conf/hydra/launcher/*.yaml) -------------------------------------------

def job_dir(mode: str, run_dir: str, hydra_mode: str = "RUN") -> str:
    """Hydra's job dir: the run itself when training. Test and report mode make their own folders once their
    checks pass, so that a refused command creates none; Hydra gets an empty scratch folder, removed at exit."""
    if mode not in ("test", "report"):
        if "MULTIRUN" in str(hydra_mode):  # a sweep's jobs go to the sweep dir, not here
            return run_dir
        # ranks above 0 of a torchrun experiment get a scratch folder: rank 0 names the run's (rl_core.modes)
        if os.environ.get("RANK", "0") == "0":
            _make_run_dir(run_dir)
            return run_dir
    scratch = Path(tempfile.gettempdir()) / f"rl-launcher-{os.getpid()}"
    if scratch not in _SCRATCH:
        _SCRATCH.add(scratch)
        atexit.register(lambda: scratch.rmdir() if scratch.is_dir() and not any(scratch.iterdir()) else None)
    return str(scratch)


def _make_run_dir(run_dir: str) -> None:
    """Make ``run_dir`` now, or stop in one line when it cannot be made: Hydra makes it next, before any of
    this project's code runs, and would fail with a traceback."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: run_dir: cannot create {run_dir} ({e.strerror or e})", file=sys.stderr)
        sys.exit(2)


def parallel_jobs(cores_per_job: int) -> int:
    """How many jobs of a local sweep the machine's cores carry at once (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(cores_per_job)))


def job_cores(num_workers: int | None) -> int:
    """CPUs a cluster job asks for: the learner plus its worker processes, and at least 2 (the update
    runs on the learner's threads)."""
    return max(2, 1 + int(num_workers or 0))


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("job_dir", job_dir, replace=True)
    OmegaConf.register_new_resolver("job_cores", job_cores, replace=True)
    OmegaConf.register_new_resolver("parallel_jobs", parallel_jobs, replace=True)


class LauncherCheck(Callback):
    """Hydra callback: a SLURM sweep on a machine without SLURM stops at once, in one line."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        if target.endswith("SlurmLauncher") and not (shutil.which("srun") and shutil.which("sbatch")):
            # an exception here would only be a warning: Hydra carries on with callbacks' errors
            print("error: hydra/launcher=submitit_slurm: this machine has no SLURM (srun and sbatch are not on "
                  "PATH); hydra/launcher=submitit_local runs the same sweep as local processes", file=sys.stderr)
            sys.exit(2)
        submitit = target.endswith(("SlurmLauncher", "LocalLauncher"))  # the plugin's, or ours (rl_core.packing)
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "timeout_min", "jobs_per_task"):
            value = OmegaConf.select(config, f"hydra.launcher.{key}", default=None)
            if submitit and isinstance(value, int) and value < (0 if key == "gpus_per_node" else 1):
                print(f"error: hydra.launcher.{key}: must be >= {0 if key == 'gpus_per_node' else 1}, got {value}",
                      file=sys.stderr)
                sys.exit(2)
        packed = OmegaConf.select(config, "hydra.launcher.jobs_per_task", default=1)
        spread = [k for k in ("nodes", "tasks_per_node") if (OmegaConf.select(config, f"hydra.launcher.{k}") or 1) > 1]
        if isinstance(packed, int) and packed > 1 and spread:
            print(f"error: hydra.launcher.jobs_per_task={packed} packs one-process jobs: it cannot go with "
                  f"hydra.launcher.{spread[0]} > 1 (an experiment on several ranks is one job of its own)", file=sys.stderr)
            sys.exit(2)


def describe_hydra_error(e: BaseException) -> tuple[str, int] | None:
    """A Hydra or OmegaConf error of composing the config as (one message, exit code), naming the closest key
    when one is mistyped; None for any other error. Hydra itself prints these with a stack trace hint."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(e, (HydraException, OmegaConfBaseException)):
        return None
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    parent, key, full_key = (getattr(cause, a, None) for a in ("parent_node", "key", "full_key"))
    if isinstance(parent, DictConfig) and isinstance(key, str) and full_key and key not in parent:
        close = difflib.get_close_matches(key, [str(k) for k in parent.keys()], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(map(str, parent.keys()))}"
        return f"{full_key}: unknown key{hint} (a new key is added with +{full_key}=...)", 2
    missing = re.match(r"In '[^']*': Could not find '([^']+)/([^'/]+)'\s*\nAvailable options in '[^']*':\n(.*)",
                       str(e).strip(), re.S)
    if missing:  # an unknown group option: the closest names, not the whole list
        group, name = missing.group(1), missing.group(2)
        options = [o.strip() for o in missing.group(3).splitlines() if o.startswith("\t")]
        close = [o for o in options if name in o][:3] or difflib.get_close_matches(name, options, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"options: {', '.join(options)}"
        return f"{group}={name}: no such option in conf/{group}/; {hint}", 2
    lines = [line for line in str(e).strip().splitlines()
             if line.strip() and not line.startswith(("Config search path", "\tprovider="))]
    composing = "Error executing job" not in str(e) and not str(e).startswith("a job of the sweep failed")
    return "\n".join(lines), 2 if composing else 1


def check_yaml_files(conf_dir: Path) -> str | None:
    """The first YAML syntax error under ``conf_dir`` as one line (file, line, problem), or None. Hydra would
    report it as a parser traceback, and only once the broken file is composed."""
    import yaml

    for path in sorted(conf_dir.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            return f"{path}{where}: {getattr(e, 'problem', None) or (str(e).splitlines() or [''])[0]}"
    return None


# -- checks and saved configs ---------------------------------------------------------------------------------

def check_top_level(cfg: DictConfig) -> None:
    """The keys of ``conf/config.yaml`` itself (the groups are checked against their classes)."""
    expected = {"seed": int, "resume": bool, "overwrite": bool, "mode": str, "run_dir": str}
    for key, tp in expected.items():
        value = cfg[key]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if cfg.mode not in MODES:
        raise ConfigError(f"mode: must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    solved = cfg.solved_reward
    if solved is not None and (not isinstance(solved, (int, float)) or isinstance(solved, bool)):
        raise ConfigError(f"solved_reward: expected a number or null, got {solved!r}")
    if cfg.mode == "report" and not isinstance(cfg.sweep_dir, str):
        raise ConfigError(f"sweep_dir: report mode needs the folder of a multirun, got {cfg.sweep_dir!r}")
    if cfg.checkpoint is not None and not isinstance(cfg.checkpoint, str):
        raise ConfigError(f"checkpoint: expected a file path, got {cfg.checkpoint!r}")
    trusted = cfg.get("trusted_targets")
    if not isinstance(trusted, (list, ListConfig)) or not all(isinstance(t, str) and t for t in trusted):
        raise ConfigError(f"trusted_targets: expected a list of module prefixes (e.g. [mypkg.]), got {trusted!r}")
    if cfg.mode == "train" and cfg.resume and cfg.checkpoint:
        raise ConfigError("checkpoint: give either resume=true (continue this run) or checkpoint=FILE "
                          "(new run from those weights), not both")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k2: v2 for k, v in node.items() for k2, v2 in _flatten(v, f"{prefix}{k}.").items()}
    if isinstance(node, list):
        return {k2: v2 for i, v in enumerate(node) for k2, v2 in _flatten(v, f"{prefix[:-1]}[{i}].").items()}
    return {prefix[:-1]: node}


def config_for_resume(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The run's saved config, with this command's machine, logger and top-level switches.

    Other differences are listed in a warning and ignored: a run continues as it started.
    """
    from rl_core.checkpoint import CheckpointError  # torch: imported once a run needs it

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise CheckpointError(f"resume=true but {run_dir} holds no config.yaml of an earlier run; "
                              "point run_dir at the run to continue")
    saved = load_saved_config(saved_file, trusted_names(cfg))
    now = OmegaConf.to_container(cfg, resolve=True)
    before = OmegaConf.to_container(saved, resolve=True)
    keep = [g for g in GROUPS if g not in RESUME_MAY_CHANGE] + ["seed"]
    a, b = _flatten({k: before.get(k) for k in keep}), _flatten({k: now.get(k) for k in keep})
    a.update({k: OmegaConf.select(saved, k) for k in RESUME_KEEPS})
    b.update({k: OmegaConf.select(cfg, k) for k in RESUME_KEEPS})
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        log.warning("resume keeps the run's saved config; ignoring: %s",
                    ", ".join(f"{k}={b.get(k)!r} (saved {a.get(k)!r})" for k in changed))
    merged = OmegaConf.merge(saved, {g: cfg[g] for g in RESUME_MAY_CHANGE},
                             {"resume": True, "run_dir": cfg.run_dir, "checkpoint": None,
                              "trusted_targets": cfg.get("trusted_targets") or []})
    for key in RESUME_KEEPS:
        OmegaConf.update(merged, key, a[key])
    return merged


def config_for_test(cfg: DictConfig, run_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The training run's saved config ``run_cfg`` with what this test command may change: whole
    ``machine``/``logger`` options, single keys of ``env``/``model``/``machine``/``logger`` given on the
    command line (``overrides``, Hydra's task overrides), and the ``test`` group. A whole ``env`` or
    ``model`` option is ignored with a warning: the weights were trained for the saved one."""
    keys = [(o.lstrip("+~").split("=", 1)[0], o) for o in overrides]
    for key, _ in keys:
        if key in RESUME_MAY_CHANGE:  # where it runs and logs: any option of the group (logger=wandb)
            run_cfg[key] = cfg[key]
    for key, override in keys:
        if key.split(".")[0] in TEST_MAY_CHANGE and "." in key:
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), force_add=True)
        elif key in TEST_MAY_CHANGE and key not in RESUME_MAY_CHANGE:
            log.warning("test mode builds %s from the run's saved config; ignoring %s", key, override)
    run_cfg.test = cfg.test
    return run_cfg


def _key_path(cfg: DictConfig, full_key: str) -> str:
    """Hydra's ``full_key`` as the user writes it: ``pipeline.stages0.max_stage_steps`` -> ``pipeline.stages[0]...``
    (Hydra joins a list's name and an index without a separator)."""
    node: Any = cfg
    parts: list[str] = []
    for part in full_key.split("."):
        listed = re.fullmatch(r"(\w+?)(\d+)", part)
        if isinstance(node, DictConfig) and part not in node and listed and OmegaConf.is_list(node.get(listed[1])):
            name, index = listed[1], int(listed[2])
            parts.append(f"{name}[{index}]")
            items = node[name]
            node = items[index] if index < len(items) else None
        else:
            parts.append(part)
            node = node.get(part) if isinstance(node, DictConfig) else None
    return ".".join(parts).replace(".[", "[")


def instantiate(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of one group; a constructor's ValueError becomes a ConfigError naming the key."""
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(cfg[group], **kwargs)
    except InstantiationException as e:
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        full_key = re.search(r"full_key: (\S+)", str(e))
        where = _key_path(cfg, full_key.group(1)) if full_key else group
        if isinstance(cause, ValueError):
            raise ConfigError(f"{where}.{cause}" if re.match(r"^\w+: ", str(cause)) else f"{where}: {cause}") from None
        raise ConfigError(f"{where}: {type(cause).__name__}: {cause}") from None
