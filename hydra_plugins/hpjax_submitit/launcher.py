from collections.abc import Callable, Sequence
from typing import Any, Optional

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import _Populations  # noqa: F401  (registers the configs with Hydra)

# What an ImportError names when hydra-submitit-launcher or submitit is missing
_EXTRA = ("submitit", "hydra_plugins.hydra_submitit_launcher")


class HpjaxSubmititLauncher(Launcher):
    """Hydra's submitit launcher with populations and retries: each chunk of a population is one
    submitit job; a job that ends without a result is submitted again."""

    _EXECUTOR = "abstract"
    _CONF = ""  # its name in hydra/launcher

    def __init__(self, **params: Any) -> None:
        # Lazy import: plugin discovery must stay fast, and work without the `slurm` extra.
        try:
            from ._impl import IMPLS
        except ImportError as e:
            if not (e.name or "").startswith(_EXTRA):
                raise
            raise ImportError(
                f"hydra/launcher={self._CONF} needs "
                f"hydra-submitit-launcher and submitit ({e.name} is missing): "
                "pip install 'hpjax[slurm]'") from None
        self.impl = IMPLS[self._EXECUTOR](**params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    @property
    def in_process(self) -> bool:
        """A scheduler runs in the submitted jobs (pickled there), not the caller's process."""
        return False

    @property
    def populations(self) -> bool:
        """Whether `run_populations` trains populations: hpjax's task, vectorize=true."""
        return self.impl.populations()

    # Each job is composed in its submitted job, as it runs: a sweeper checks a batch first.
    composes_batch_first = False

    def run_populations(self, jobs: Sequence[tuple[int, Sequence[str]]], scheduler: Any,
                        on_result: Optional[Callable[[int, JobReturn], None]] = None
                        ) -> Sequence[JobReturn]:
        """`hpjax.engine.PopulationLauncher.run_populations` (see the impl's)."""
        return self.impl.run_populations(jobs, scheduler, on_result)

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        return self.impl.launch(job_overrides, initial_job_idx)


class HpjaxSlurmLauncher(HpjaxSubmititLauncher):
    _EXECUTOR = "slurm"
    _CONF = "hpjax_slurm"


class HpjaxLocalLauncher(HpjaxSubmititLauncher):
    _EXECUTOR = "local"
    _CONF = "hpjax_submitit_local"
