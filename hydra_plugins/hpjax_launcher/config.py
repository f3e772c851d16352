from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf


@dataclass
class VmapLauncherConf:
    _target_: str = "hydra_plugins.hpjax_launcher.launcher.VmapLauncher"
    # Most trials trained together as one program; a larger group runs in chunks of this size
    max_population: int = 64
    # Memory for one chunk in MiB: the chunk size is also capped by an estimate of each member's
    # memory from its parameter count and batch size; null: no cap but max_population
    memory_budget_mb: Optional[int] = 4096


ConfigStore.instance().store(group="hydra/launcher", name="vmap", node=VmapLauncherConf,
                             provider="hpjax")


@dataclass
class _Populations:
    # One submitit job per chunk of a population (true) or one per trial (false)
    vectorize: bool = True
    # As hydra/launcher=vmap: the largest chunk, and the memory budget of one chunk in MiB
    max_population: int = 64
    memory_budget_mb: Optional[int] = 4096
    # A job that ends without a result (cancelled, killed, node lost) is submitted again this
    # many times, into the same job directories (trials continue from their checkpoints)
    max_retries: int = 2
    # Seconds between two looks at the submitted jobs
    poll_s: float = 1.0


@dataclass
class HpjaxSlurmConf(SlurmQueueConf, _Populations):
    _target_: str = "hydra_plugins.hpjax_launcher.cluster.HpjaxSlurmLauncher"


@dataclass
class HpjaxLocalConf(LocalQueueConf, _Populations):
    _target_: str = "hydra_plugins.hpjax_launcher.cluster.HpjaxLocalLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="hpjax_slurm", node=HpjaxSlurmConf,
                             provider="hpjax")
ConfigStore.instance().store(group="hydra/launcher", name="hpjax_submitit_local",
                             node=HpjaxLocalConf, provider="hpjax")
