"""Every use of Hydra's and OmegaConf's internals by the launcher, in one place, each with
Hydra's public path as its fallback. Selected here, once: `enabled()`.

- Composing a batch's jobs once per set of config-group choices (`_compose.FastSweepConfigs`):
  Hydra's `ConfigLoaderImpl._apply_overrides_to_config` and `get_overrides_dirname`
  (`hydra._internal`); fallback: Hydra composes every job (`load_sweep_config`).
- A sweeper's check of its batch (`Sweeper.validate_batch_is_legal`, which composes every job
  and drops the result) told apart by its frame (`sys._getframe`: `checking_batch`), so that
  the check writes its values into one scratch copy per template; fallback: a copy per job.
- Templated jobs (`_fast.Templates`): a job's `.hydra/` files rendered from its template's with
  OmegaConf's YAML dumper (`omegaconf._utils.get_omega_conf_dumper`), its values converted by
  the config's value nodes (`DictConfig._get_node`), and its files laid out as Hydra's
  `run_job` lays them; fallback: Hydra's `run_job` for every job.

`enabled()` is true where the installed hydra-core and omegaconf are in the ranges these are
tested with (`HYDRA`, `OMEGACONF`: the floors in pyproject.toml, run by scripts/check_floors.sh,
to the newest, run by CI) and `HPJAX_SPEEDUPS` is not `off` (the switch the sweeper's
`_speedups` reads too). tests/plugins/test_conformance.py runs a sweep both ways and asserts the
same job files, byte for byte.
"""

import functools
import os
import re
import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

HYDRA = ("1.3.2", "1.4")  # known-good versions: [lowest, first untested)
OMEGACONF = ("2.3", "2.4")
SWITCH = "HPJAX_SPEEDUPS"


def in_range(installed: str, known: tuple[str, str]) -> bool:
    """Whether a version (`1.3.2`, `2.3.0.dev1`) is in [known[0], known[1]), by its numbers."""
    def numbers(v: str) -> tuple:
        return tuple(int(re.match(r"\d*", part).group() or 0) for part in v.split(".")[:3])

    return numbers(known[0]) <= numbers(installed) < numbers(known[1])


@functools.cache
def _known_good() -> bool:
    from importlib.metadata import version

    return in_range(version("hydra-core"), HYDRA) and in_range(version("omegaconf"), OMEGACONF)


def enabled() -> bool:
    """Whether the launcher uses Hydra's and OmegaConf's internals (`HPJAX_SPEEDUPS` not
    `off`, known-good versions) or only their public API."""
    return os.environ.get(SWITCH, "on").lower() != "off" and _known_good()


def config_loader_impl() -> Any:
    """Hydra's `ConfigLoaderImpl` class, or None where it cannot be imported."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:  # pragma: no cover
        return None
    return ConfigLoaderImpl


def apply_overrides(overrides: list, cfg: DictConfig) -> None:
    """Value overrides applied to a composed config as Hydra applies them."""
    config_loader_impl()._apply_overrides_to_config(overrides, cfg)


def overrides_dirname(**kwargs: Any) -> str:
    """`hydra.job.override_dirname` as Hydra builds it."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(**kwargs)


def yaml_dumper() -> Any:
    """The PyYAML dumper OmegaConf writes `.hydra/*.yaml` with."""
    from omegaconf._utils import get_omega_conf_dumper

    return get_omega_conf_dumper()


def child_node(cfg: DictConfig, key: str) -> Any:
    """A config's node for one key (a value node: its `validate_and_convert` checks a value as
    OmegaConf does on assignment)."""
    return cfg._get_node(key)


_CHECK = Sweeper.validate_batch_is_legal.__code__


def checking_batch() -> bool:
    """Whether the composition asked for now is for `Sweeper.validate_batch_is_legal`, which
    only asks whether the job composes (it has no way to say so): its frame, a few up from the
    caller's (for wrappers such as profilers)."""
    frame = sys._getframe(2)  # (0: this function, 1: `FastSweepConfigs.__call__`)
    for _ in range(3):
        if frame is None or frame.f_code is _CHECK:
            return frame is not None
        frame = frame.f_back
    return False
