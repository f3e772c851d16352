from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


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
