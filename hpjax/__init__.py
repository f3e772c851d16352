"""hpjax: config-driven hyperparameter tuning of JAX/Flax/Optax models with Hydra.

The public API, for users and for hpjax's Hydra plugins (which import nothing else from hpjax).
Names load on first use: `import hpjax` imports neither JAX nor Hydra's plugins and changes no
global state (JAX's device count and Hydra's ConfigStore are set by `main()` or `register()`).
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "hpjax.config",
    "ConfigError": "hpjax.config",
    "Result": "hpjax.results",
    "Outcome": "hpjax.results",
    "parse_objectives": "hpjax.results",
    "read_result": "hpjax.results",
    "worst_objective": "hpjax.results",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name == "read_result":
        from hpjax.results import Result

        return Result.read
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hpjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
