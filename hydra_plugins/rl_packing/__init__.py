"""The packed submitit launchers as Hydra plugins (Hydra instantiates launchers only from the hydra_plugins
namespace); the code is rl_core.packing's."""

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from rl_core.packing import Packing


class PackedSlurmLauncher(Packing, SlurmLauncher):
    """submitit_slurm with ``jobs_per_task``."""

    def __init__(self, **params):
        SlurmLauncher.__init__(self, **params)
        self.take_packing_params()


class PackedLocalLauncher(Packing, LocalLauncher):
    """submitit_local with ``jobs_per_task``."""

    def __init__(self, **params):
        LocalLauncher.__init__(self, **params)
        self.take_packing_params()
