"""`hydra/launcher=hpjax_slurm` and `hpjax_submitit_local`: Hydra's submitit launchers, with
populations and retries.

With `vectorize=true` (the default) a batch is split by static signature and size, as the vmap
launcher splits it, and each chunk is one submitit job that trains its trials as one population;
`vectorize=false` submits one job per trial. Either way every trial gets its own job directory.
A job that ends without a result (cancelled, killed, its node lost) is submitted again, up to
`max_retries` times, into the same job directories: with `train.checkpoint_every` its trials
continue from their last checkpoint. A trial that still has none fails under Hydra, and the
sweep goes on.
"""

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

# SLURM states of a job that will not write a result any more
_ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
          "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT")


def slurm_state(job_id: str) -> str:
    """A SLURM job's state from `scontrol` (no accounting database needed, unlike `sacct`);
    "GONE" once SLURM forgot the job."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True)
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "GONE" if "Invalid job id" in out.stderr or out.returncode else "UNKNOWN"


class HpjaxSubmititLauncher(BaseSubmititLauncher):
    _EXECUTOR = "abstract"

    def __init__(self, vectorize: bool = True, max_population: int = 64,
                 memory_budget_mb: Any = 4096, max_retries: int = 2, poll_s: float = 1.0,
                 **params: Any) -> None:
        super().__init__(**params)
        self.vectorize, self.max_retries, self.poll_s = vectorize, max_retries, poll_s
        self.max_population, self.memory_budget_mb = max_population, memory_budget_mb

    def _impl(self) -> Any:
        from ._impl import VmapLauncherImpl

        impl = VmapLauncherImpl(self.max_population, self.memory_budget_mb)
        impl.setup(hydra_context=self.hydra_context, task_function=self.task_function,
                   config=self.config)
        choice = self.config.hydra.runtime.choices.get("hydra/launcher") or self._EXECUTOR
        impl.name = f"{choice} (population)"  # result.json's launcher
        return impl

    # -- in the submitted job ------------------------------------------------------------------
    def __call__(self, unit: list, singleton_state: dict) -> list[JobReturn]:
        """Runs one unit, a list of (job number, overrides): a population, or a single trial."""
        import submitit

        Singleton.set_state(singleton_state)
        setup_globals()
        if self.vectorize and self._is_hpjax():
            return self._impl().run_jobs(unit)
        returns = []
        for num, overrides in unit:
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                              overrides)
            with open_dict(sweep_config.hydra.job) as job:
                job.id = submitit.JobEnvironment().job_id
                sweep_config.hydra.job.num = num
            returns.append(run_job(hydra_context=self.hydra_context,
                                   task_function=self.task_function, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir",
                                   job_subdir_key="hydra.sweep.subdir"))
        return returns

    def _is_hpjax(self) -> bool:
        return bool(getattr(self.task_function, "hpjax_task", False))

    # -- in the driver -------------------------------------------------------------------------
    def _units(self, indexed: list[tuple[int, list]]) -> list[list[tuple[int, list]]]:
        if not (self.vectorize and self._is_hpjax()):
            return [[job] for job in indexed]
        units = self._impl().units(indexed)
        log.info("%d jobs as %d submitit job%s (vectorize=true)", len(indexed), len(units),
                 "" if len(units) == 1 else "s")
        return units

    def _executor(self) -> Any:
        import submitit

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        indexed = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        for num, overrides in indexed:
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        units = self._units(indexed)
        executor = self._executor()
        state = Singleton.get_state()
        with executor.batch():
            jobs = [executor.submit(self, unit, state) for unit in units]
        returns: dict[int, JobReturn] = {}
        tries = [0] * len(units)
        pending = dict(enumerate(jobs))
        while pending:
            for u, job in list(pending.items()):
                outcome = self._poll(job)
                if outcome is None:
                    continue
                del pending[u]
                if isinstance(outcome, list):
                    returns.update({num: ret for (num, _), ret in zip(units[u], outcome,
                                                                      strict=True)})
                    continue
                nums = [num for num, _ in units[u]]
                if tries[u] < self.max_retries:
                    tries[u] += 1
                    log.warning("submitit job %s (trials %s) ended without a result (%s): "
                                "submitting it again, retry %d of %d", job.job_id, nums,
                                outcome, tries[u], self.max_retries)
                    pending[u] = executor.submit(self, units[u], state)
                else:
                    log.error("submitit job %s (trials %s) ended without a result (%s) after "
                              "%d retries: its trials fail", job.job_id, nums, outcome, tries[u])
                    for num, overrides in units[u]:
                        returns[num] = _failed(overrides, outcome)
            if pending:
                time.sleep(self.poll_s)
        return [returns[num] for num, _ in indexed]

    def _poll(self, job: Any) -> Any:
        """None while the job runs; its JobReturns once it finished; else why it has none."""
        if job.paths.result_pickle.exists() or (self._EXECUTOR != "slurm" and job.done()):
            try:
                return job.results()[0]
            except Exception as e:  # noqa: BLE001  (killed, cancelled: no result written)
                return repr(e).splitlines()[0][:300]
        if self._EXECUTOR == "slurm":
            state = slurm_state(job.job_id).split()[0]
            if state in _ENDED or state == "GONE":
                time.sleep(2 * self.poll_s)  # the result may still be on its way to the disk
                if not job.paths.result_pickle.exists():
                    return f"SLURM state {state}"
        return None


def _failed(overrides: list, why: str) -> JobReturn:
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret._return_value = RuntimeError(f"the job ended without a result: {why}")
    return ret


class HpjaxSlurmLauncher(HpjaxSubmititLauncher):
    _EXECUTOR = "slurm"


class HpjaxLocalLauncher(HpjaxSubmititLauncher):
    _EXECUTOR = "local"
