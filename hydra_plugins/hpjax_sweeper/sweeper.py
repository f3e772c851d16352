from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import HpjaxSweeperConf  # noqa: F401  (registers the config with Hydra)


class HpjaxSweeper(Sweeper):
    """Grid, random, Bayesian (TPE, GP) and evolutionary (CMA-ES, NSGA-II) search and Sobol
    sequences over a search space in Hydra's override grammar, with the study in Optuna storage."""

    def __init__(self, **params: Any) -> None:
        # Lazy import: plugin discovery must stay fast and must not import Optuna.
        from ._impl import HpjaxSweeperImpl

        self.sweeper = HpjaxSweeperImpl(**params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from ._faults import interruptible

        return interruptible(self.sweeper, arguments)
