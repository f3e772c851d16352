"""The public entry points that are not a module's own: composing a config in Python."""

from collections.abc import Callable, Sequence
from typing import Any, Optional

from hpjax.config import Config, to_config


def compose(overrides: Sequence[str] = (), config_dir: Optional[str] = None,
            config_name: str = "config") -> Config:
    """The validated config that `hpjax <overrides>` would run, composed with Hydra's compose API.

    Args:
      overrides: command-line overrides, e.g. `["optimizer=adamw", "optimizer.lr=3e-4"]`.
      config_dir: a folder of primary configs; default hpjax's own `conf/`.
      config_name: the primary config in it.
    Raises:
      ConfigError: a value is missing, unknown or out of range.

    Examples:
      >>> cfg = compose(["optimizer=adamw", "optimizer.lr=3e-4"])
      >>> cfg.optimizer.name, cfg.optimizer.lr
      ('adamw', 0.0003)
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hpjax.cli import CONF_DIR, register

    register()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose there
        return to_config(hydra_compose(config_name, overrides=list(overrides)))
    with initialize_config_dir(str(config_dir or CONF_DIR), version_base="1.3"):
        return to_config(hydra_compose(config_name, overrides=list(overrides)))


def is_task(task_function: Callable[..., Any]) -> bool:
    """Whether a Hydra task function is hpjax's own (`hpjax.app.train_task`): its jobs can train
    as populations."""
    return bool(getattr(task_function, "hpjax_task", False))
