"""hpjax: config-driven hyperparameter tuning of JAX/Flax/Optax models with Hydra.

The public API, for users and for hpjax's Hydra plugins (which import nothing else from hpjax):

- the Python API: `train` (overrides -> `Result`, files as the command line's), `sweep`
  (overrides -> `Sweep`: table, study, best), `load` (a job directory -> `Trained`: config,
  best variables, `predict`);
- configs: `compose` (overrides -> validated `Config`), `validate` (a composed DictConfig ->
  `Config`), `register` (hpjax's schemas into Hydra's ConfigStore), `ConfigError`;
- training: `run` (one config into a job directory), `plan` (a batch into populations and
  chunks, with the memory estimate), `train_jobs` (a batch of `Job`s; each ends as a `JobEnd`,
  the job's task function under Hydra), `is_task` (whether a task function is hpjax's);
- multi-fidelity: `hyperband`, `successive_halving`, `bracket`, `bracket_table` (Hyperband's
  brackets in epochs), `check_fidelity`, `SuccessiveHalving` (a bracket's rule in a population),
  `HalvingStoppers`, `SameStopper` (picklable, for populations in SLURM jobs);
  `PBT`, `PBTBounds`, `check_pbt_keys` (population-based training);
- results: `Result`, `read_result(job_dir)`, `parse_objectives`, `worst_objective`;
- the process: `use_cpu_cores`, `enable_compilation_cache`.

Names load on first use: `import hpjax` imports neither JAX nor Flax and changes no global state
(JAX's device count and Hydra's ConfigStore are set by `hpjax.app.main()` or by explicit calls).
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "hpjax.config",
    "ConfigError": "hpjax.config",
    "validate": ("hpjax.config", "to_config"),
    "register": ("hpjax.cli", "register"),
    "compose": "hpjax.api",
    "train": "hpjax.api",
    "sweep": "hpjax.api",
    "load": "hpjax.api",
    "Trained": "hpjax.api",
    "Sweep": "hpjax.api",
    "is_task": "hpjax.api",
    "run": "hpjax.engine.jobs",
    "JobEnd": "hpjax.engine.jobs",
    "Job": "hpjax.engine.batch",
    "plan": "hpjax.engine.batch",
    "train_jobs": "hpjax.engine.batch",
    "hyperband": "hpjax.engine.schedulers.halving",
    "successive_halving": "hpjax.engine.schedulers.halving",
    "bracket": "hpjax.engine.schedulers.halving",
    "bracket_table": ("hpjax.engine.schedulers.halving", "table"),
    "check_fidelity": ("hpjax.engine.schedulers.halving", "check"),
    "SuccessiveHalving": "hpjax.engine.schedulers.halving",
    "HalvingStoppers": "hpjax.engine.schedulers.halving",
    "SameStopper": "hpjax.engine.schedulers.halving",
    "PBT": "hpjax.engine.schedulers.pbt",
    "PBTBounds": ("hpjax.engine.schedulers.pbt", "Bounds"),
    "check_pbt_keys": ("hpjax.engine.schedulers.pbt", "check_keys"),
    "Result": "hpjax.results",
    "Outcome": "hpjax.results",
    "parse_objectives": "hpjax.results",
    "read_result": ("hpjax.results", "Result.read"),
    "worst_objective": "hpjax.results",
    "use_cpu_cores": "hpjax.engine.compile",
    "enable_compilation_cache": "hpjax.engine.compile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hpjax' has no attribute {name!r}")
    module, attr = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name],
                                                                             name)
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
