from collections.abc import Callable, Sequence
from typing import Any, Optional

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import VmapLauncherConf  # noqa: F401  (registers the config with Hydra)


class VmapLauncher(Launcher):
    """Trains each batch of jobs as populations: one `jit(vmap(...))` program per static
    signature. Any task function other than hpjax's own runs one job after another."""

    def __init__(self, max_population: int = 64, memory_budget_mb: Optional[int] = 4096) -> None:
        # Lazy import: plugin discovery must stay fast and must not import JAX.
        import hpjax.engine

        from ._impl import VmapLauncherImpl

        try:
            self.impl = VmapLauncherImpl(max_population, memory_budget_mb)
        except ValueError as e:  # a bad hydra.launcher value: one line, not Hydra's wrapping
            hpjax.engine.stop(str(e))

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    in_process = True  # a scheduler runs in the caller's process: it may report to a study

    @property
    def populations(self) -> bool:
        """Whether `run_populations` trains populations: hpjax's task."""
        import hpjax.engine

        return hpjax.engine.is_task(getattr(self.impl, "task_function", None))

    def run_populations(self, jobs: Sequence[tuple[int, Sequence[str]]], scheduler: Any,
                        on_result: Optional[Callable[[int, JobReturn], None]] = None
                        ) -> Sequence[JobReturn]:
        """`hpjax.engine.PopulationLauncher.run_populations`: the jobs (job number, overrides)
        as populations driven by `scheduler` (None: each trial to its end)."""
        return self.impl.run_populations(jobs, scheduler, on_result)

    @property
    def composes_batch_first(self) -> bool:
        """Whether a batch's jobs are all composed before any runs (hpjax's task): a bad
        override then fails the batch before it starts, and a sweeper need not compose each job
        once more to check it."""
        import hpjax.engine

        return hpjax.engine.is_task(getattr(self.impl, "task_function", None))

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        return self.impl.launch(job_overrides, initial_job_idx)
