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
        import hpjax.engine

        from ._impl import HpjaxSweeperImpl

        # read from the config by the sweep's report when it ends (hpjax.report.keep_params)
        keep = params.pop("keep_params", None)
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            hpjax.engine.stop(f"hydra.sweeper.keep_params={keep}: must be an integer >= 0, or "
                              "null to keep every trial's parameters")
        try:
            self.sweeper = HpjaxSweeperImpl(**params)
        except ValueError as e:  # a bad hydra.sweeper value: one line, not Hydra's wrapping
            hpjax.engine.stop(str(e))

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from ._faults import interruptible

        return interruptible(self.sweeper, arguments)
