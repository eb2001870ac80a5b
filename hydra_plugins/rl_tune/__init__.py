"""The ``rl_tune`` sweeper (``hydra/sweeper=rl_tune``, or an ``hparams_search=`` preset): a study on current
Optuna, tuned by asynchronous workers that the configured launcher starts (the code is rl_core.tune's)."""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("tune")


@dataclass
class TuneSweeperConf:
    _target_: str = "hydra_plugins.rl_tune.TuneSweeper"
    _recursive_: bool = False             # runner is built by each worker, not here
    study_name: str = "study"
    direction: str = "maximize"
    n_trials: int = 20                    # finished + pruned trials the study ends at
    workers: int = 1                      # launcher jobs that share the study; each takes the next trial at once
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])   # every trial's tuning seeds (paired)
    test_seeds: List[int] = field(default_factory=list)           # kept apart from seeds, for the held-out rerun
    test_top: int = 2                     # the best trials rerun on test_seeds beside the start (0: no rerun)
    test_overrides: List[str] = field(default_factory=list)  # for the test runs only, e.g. a stop-at-solve protocol
    objective: str = "final"              # final: IQM over seeds of the last validation; auc: of every validation
    sampler: str = "tpe"                  # tpe | random
    sampler_seed: int = 0                 # worker i samples with sampler_seed + i
    pruner: str = "none"                  # none | median | halving | wilcoxon
    pruner_startup_trials: int = 3        # median: trials finished before it prunes
    wilcoxon_p: float = 0.1
    lease_s: float = 60.0                 # a running trial whose worker gave no sign of life this long is rerun
    warm_start: List[str] = field(default_factory=list)   # override sets (e.g. "experiment=lunar_lander_fast"): first trials
    runner: Dict[str, Any] = field(default_factory=lambda: {"_target_": "rl_core.tune.runs.TrainRuns", "at_once": 0})
    params: Dict[str, str] = field(default_factory=dict)  # key: interval(a, b) | tag(log, interval(a, b)) | choice(...) ...


ConfigStore.instance().store(group="hydra/sweeper", name="rl_tune", node=TuneSweeperConf, provider="rl_launcher")


class TuneSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from rl_core.config_check import ConfigError

        try:
            return self._sweep(arguments)
        except ConfigError as e:  # one line naming the key, as launch.py prints a composing error
            raise HydraException(str(e)) from None

    def _sweep(self, arguments: list[str]) -> Any:
        from rl_core.config_check import ConfigError
        from rl_core.tune.finish import finish
        from rl_core.tune.heldout import enabled, pending
        from rl_core.tune.space import describe, search_space, start_values
        from rl_core.tune.study import counted, create_or_check, study_dir

        parsed = OverridesParser.create().parse_overrides(arguments)
        params = {k: str(v) for k, v in self.settings.pop("params").items()}
        params.update({o.get_key_element(): o.input_line.split("=", 1)[1] for o in parsed if o.is_sweep_override()})
        base = [o.input_line for o in parsed if not o.is_sweep_override()]
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, base)
        space = search_space(params, cfg)
        # one W&B group per study: its runs are single runs, which W&B would leave ungrouped
        groups = [f"{k}={self.settings['study_name']}" for k in ("logger.group", "logger.wandb.group")
                  if OmegaConf.select(cfg, k, default="-") is None]
        s = {**self.settings, "base": [*base, *groups], "search_space": describe(space),
             "solved_reward": OmegaConf.select(cfg, "solved_reward", default=None)}
        self._check(s, cfg, ConfigError)
        if s["test_overrides"]:  # refused now, not after the trials: the test runs compose them
            try:
                self.hydra_context.config_loader.load_sweep_config(self.config, [*base, *s["test_overrides"]])
            except Exception as e:
                raise ConfigError(f"hydra.sweeper.test_overrides: {str(e).splitlines()[0]}") from None
        # the composed config and the named presets are the first trials: the study can only beat them
        starts = {"the command's config": start_values(space, cfg, "the command's config", params)}
        for preset in s["warm_start"]:
            extra = self.hydra_context.config_loader.load_sweep_config(self.config, [*base, *preset.split()])
            starts[preset] = start_values(space, extra, f"hydra.sweeper.warm_start {preset!r}", params)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        study, new = create_or_check(sweep_dir, s, s["search_space"])
        (study_dir(sweep_dir) / "settings.json").write_text(json.dumps(s, indent=1) + "\n")
        if new:
            for i, (name, values) in enumerate(starts.items()):
                study.enqueue_trial(values, user_attrs={"warm_start": name}, skip_if_exists=i > 0)
        left = int(s["n_trials"]) - counted(study)
        log.info("study %s in %s: %d of %d trials to go, %d worker(s), seeds %s, pruner %s%s", s["study_name"],
                 study_dir(sweep_dir), max(left, 0), s["n_trials"], s["workers"], s["seeds"], s["pruner"],
                 f"; then the top {s['test_top']} and the start on test seeds {s['test_seeds']}" if enabled(s) else "")
        if left > 0 or pending(study, s, sweep_dir):
            jobs = [[*base, "mode=tune_worker", f"hydra.sweep.subdir=workers/{i}"] for i in range(int(s["workers"]))]
            for ret in self.launcher.launch(jobs, initial_job_idx=0):
                ret.return_value  # a worker that raised raises here, after the others ended
        summary = finish(study, s, sweep_dir)
        log.info("study %s: %d trials counted; best %s; %s", s["study_name"], counted(study),
                 summary.get("best"), study_dir(sweep_dir) / "study.md")
        return summary

    @staticmethod
    def _check(s: dict[str, Any], cfg: DictConfig, error: type) -> None:
        if s["direction"] not in ("maximize", "minimize"):
            raise error(f"hydra.sweeper.direction: maximize or minimize, got {s['direction']!r}")
        if s["objective"] not in ("final", "auc"):
            raise error(f"hydra.sweeper.objective: final or auc, got {s['objective']!r}")
        if not s["seeds"] or len(set(s["seeds"])) != len(s["seeds"]):
            raise error(f"hydra.sweeper.seeds: distinct tuning seeds, got {s['seeds']}")
        if set(s["seeds"]) & set(s["test_seeds"]):
            raise error(f"hydra.sweeper.test_seeds: {sorted(set(s['seeds']) & set(s['test_seeds']))} also tune; "
                        "tuning and test seeds are kept apart")
        if int(s["test_top"]) < 0:
            raise error(f"hydra.sweeper.test_top: 0 (no held-out rerun) or more, got {s['test_top']}")
        if int(s["n_trials"]) < 1 or int(s["workers"]) < 1:
            raise error("hydra.sweeper.n_trials and hydra.sweeper.workers: at least 1")
        if s["sampler"] not in ("tpe", "random"):
            raise error(f"hydra.sweeper.sampler: tpe or random, got {s['sampler']!r}")
        if float(s["lease_s"]) <= 10:
            raise error(f"hydra.sweeper.lease_s: above 10 (a lease is renewed every 5 s), got {s['lease_s']}")
        if not 0 < float(s["wilcoxon_p"]) < 1 or int(s["pruner_startup_trials"]) < 0:
            raise error("hydra.sweeper.wilcoxon_p: in (0, 1), and hydra.sweeper.pruner_startup_trials: at least 0")
        if s["pruner"] not in ("none", "median", "halving", "wilcoxon"):
            raise error(f"hydra.sweeper.pruner: one of none, median, halving, wilcoxon; got {s['pruner']!r}")
        if s["pruner"] != "none":
            total = sum(int(st.get("max_stage_steps", 0)) for st in cfg.pipeline.stages)
            if int(cfg.pipeline.save_interval) >= total:
                raise error(f"hydra.sweeper.pruner: {s['pruner']} prunes on the validations before the end, and "
                            f"pipeline.save_interval={cfg.pipeline.save_interval} leaves none in {total:,} env steps")
        if s["pruner"] == "wilcoxon" and len(s["seeds"]) < 2:
            raise error("hydra.sweeper.pruner: wilcoxon compares seeds paired across trials: give 2+ seeds")
        from rl_core.tune.study import make_pruner

        make_pruner(s["pruner"], s)  # what a pruner needs (wilcoxon: scipy), now rather than in a worker
