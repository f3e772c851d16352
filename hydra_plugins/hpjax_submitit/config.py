"""`hydra/launcher=hpjax_slurm` and `hpjax_submitit_local`: every option of Hydra's submitit
launchers, plus populations and retries.

The confs extend hydra-submitit-launcher's, an optional dependency (`pip install 'hpjax[slurm]'`).
Without it the two names are still registered, as open nodes that take any key, so that asking
for them reaches the launcher, whose error says what to install; and Hydra's plugin scan, which
imports this module, never meets an ImportError.
"""

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

_SLURM = "hydra_plugins.hpjax_submitit.launcher.HpjaxSlurmLauncher"
_LOCAL = "hydra_plugins.hpjax_submitit.launcher.HpjaxLocalLauncher"


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
    # Seconds between two looks at the submitted jobs (one SLURM query for all of them)
    poll_s: float = 1.0
    # A bracket whose trials train in several chunks (populations of different static keys,
    # or more trials than a chunk holds): one job per chunk and rung, the driver deciding each
    # rung over the whole bracket (true), or one job whose populations take turns (false)
    by_rung: bool = True


def _open_node(target: str) -> DictConfig:
    """A conf that takes any key: the launcher it names reports the missing extra."""
    node = OmegaConf.create({"_target_": target})
    OmegaConf.set_struct(node, False)
    return node


try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
except ImportError:
    LocalQueueConf = SlurmQueueConf = None

if SlurmQueueConf is not None:

    @dataclass
    class HpjaxSlurmConf(SlurmQueueConf, _Populations):
        _target_: str = _SLURM

    @dataclass
    class HpjaxLocalConf(LocalQueueConf, _Populations):
        _target_: str = _LOCAL

    _NODES: dict[str, Any] = {"hpjax_slurm": HpjaxSlurmConf,
                              "hpjax_submitit_local": HpjaxLocalConf}
else:
    _NODES = {"hpjax_slurm": _open_node(_SLURM), "hpjax_submitit_local": _open_node(_LOCAL)}

for _name, _node in _NODES.items():
    ConfigStore.instance().store(group="hydra/launcher", name=_name, node=_node, provider="hpjax")
