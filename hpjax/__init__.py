"""hpjax: config-driven hyperparameter tuning of JAX/Flax/Optax models with Hydra.

The user API (Hydra plugins build on `hpjax.engine`, the plugin API; docs/plugins.md):

- `compose`: overrides -> a validated `Config` (hpjax's YAML and schemas, no training);
- `train`: overrides -> `Result` (one run; the same files as the command line's);
- `sweep`: overrides -> `Sweep` (the trials' table, the Optuna study, the best trial; how many
  trials failed); `SweepError` when it cannot run or every trial failed (`hpjax.errors`);
- `load`: a job directory -> `Trained` (its config, best variables and `predict`);
- `Result`, `Sweep`, `Trained`: what those return;
- `Config`, `validate` (a composed DictConfig -> `Config`), `register` (hpjax's schemas into
  Hydra's ConfigStore, for your own `@hydra.main`), `ConfigError` (a config refused: the key,
  the value and the fix);
- the process: `use_cpu_cores` (one JAX CPU device per core), `enable_compilation_cache`.

Names load on first use: `import hpjax` imports neither JAX nor Flax and changes no global state
(JAX's device count and Hydra's ConfigStore are set by `hpjax.app.main()` or by explicit calls).
"""

from hpjax._lazy import exports

__version__ = "0.1.0"

_EXPORTS = {
    "compose": "hpjax.api",
    "train": "hpjax.api",
    "sweep": "hpjax.api",
    "load": "hpjax.api",
    "Result": "hpjax.results",
    "Sweep": "hpjax.api",
    "SweepError": "hpjax.errors",
    "Trained": "hpjax.api",
    "Config": "hpjax.config",
    "ConfigError": "hpjax.config",
    "validate": ("hpjax.config", "to_config"),
    "register": ("hpjax.cli", "register"),
    "use_cpu_cores": "hpjax.engine.compile",
    "enable_compilation_cache": "hpjax.engine.compile",
}

__all__ = sorted(_EXPORTS)


__getattr__ = exports('hpjax', _EXPORTS)


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
