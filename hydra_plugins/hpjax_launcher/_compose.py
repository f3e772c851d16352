"""Composing a sweep's job configs once per set of config-group choices instead of once per job.

Hydra composes every job of a sweep from scratch (`ConfigLoader.load_sweep_config`): it reads the
config files again, builds the defaults list and merges it, and a sweeper composes each job once
more to check its batch: most of a population's time outside training. Jobs of a batch mostly
differ in values only
(`optimizer.lr=3e-4`), so `FastSweepConfigs` composes one config per distinct list of config-group
overrides with Hydra itself and gives each job a copy with its value overrides applied by the
function Hydra applies them with (`ConfigLoaderImpl._apply_overrides_to_config`); it then sets the
job's `hydra.overrides.task` and `hydra.job.override_dirname` as Hydra does. Anything else (a
`hydra.*` override, a sweep left in a job's overrides) goes to Hydra's own composition. The
result equals Hydra's for every kind of override (tests/test_launcher.py compares them).

A sweeper checks each batch before launching it (`Sweeper.validate_batch_is_legal`: Hydra's basic
sweeper composes every job once more and drops the result). For those calls, where every value
override is a plain change, the values are applied to one scratch copy per template, which the
check returns: the same errors for a bad key or value, without a copy of the config per job.

It relies on two of Hydra's internals (`ConfigLoaderImpl._apply_overrides_to_config`,
`get_overrides_dirname`) and on the caller's frame (`sys._getframe`: is it the batch's check?),
all through `_speedups`; where the speedups are off, `install` leaves Hydra's composition
alone.
"""

import copy
from collections.abc import Callable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

from . import _speedups


class FastSweepConfigs:
    """A drop-in `load_sweep_config(master_config, sweep_overrides)` for one config loader."""

    def __init__(self, loader: Any, compose: Callable) -> None:
        self.loader, self.compose = loader, compose  # compose: Hydra's own load_sweep_config
        self.parser = OverridesParser.create()
        self._templates: dict[tuple, DictConfig] = {}
        self._scratch: dict[tuple, DictConfig] = {}  # a template's copy the checks write into
        self._lines: dict[str, Any] = {}  # override line -> Hydra's parse of it
        self._master = None

    def _is_group(self, key: str) -> bool:
        return self.loader.repository.group_exists(key)

    def __call__(self, master_config: DictConfig, sweep_overrides: list) -> DictConfig:
        parsed = self._parse(sweep_overrides)
        if any(o.is_hydra_override() or o.is_sweep_override() for o in parsed):
            return self.compose(master_config, sweep_overrides)
        groups = tuple(o.input_line for o in parsed if self._is_group(o.key_or_group))
        values = [o for o in parsed if not self._is_group(o.key_or_group)]
        if master_config is not self._master:  # templates belong to one master config
            self._templates, self._scratch, self._master = {}, {}, master_config
        # Choices of distinct groups compose alike in any order (the sweeper checks a job as
        # `data=iris activation=relu`, the launcher runs it as `activation=relu data=iris`).
        plain = [o for o in parsed if self._is_group(o.key_or_group)]
        if len({o.key_or_group for o in plain}) == len(plain) and all(
                o.type == OverrideType.CHANGE for o in plain):
            key = tuple(sorted(groups))
        else:
            key = groups
        if key not in self._templates:
            self._templates[key] = self.compose(master_config, list(groups))
        if _speedups.checking_batch() and all(o.type == OverrideType.CHANGE for o in values):
            cfg = self._scratch.get(key)
            if cfg is None:
                cfg = self._scratch[key] = copy.deepcopy(self._templates[key])
            _speedups.apply_overrides(values, cfg)
            return cfg  # (the check drops it)
        cfg = copy.deepcopy(self._templates[key])
        _speedups.apply_overrides(values, cfg)
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in parsed]
            names = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = _speedups.overrides_dirname(
                overrides=parsed, kv_sep=names.kv_sep, item_sep=names.item_sep,
                exclude_keys=names.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _parse(self, lines: Any) -> list:
        """Hydra's parse of each line, once per distinct line (a grid repeats most of them)."""
        out = []
        for line in lines:
            o = self._lines.get(line)
            if o is None:
                o = self.parser.parse_overrides([line])[0]
                if len(self._lines) < 10_000:
                    self._lines[line] = o
            out.append(o)
        return out


def install(config_loader: Any) -> None:
    """Makes `config_loader.load_sweep_config` (the sweeper's and the launcher's) compose fast."""
    loader_class = _speedups.config_loader_impl()
    if not _speedups.enabled() or loader_class is None or not isinstance(config_loader,
                                                                         loader_class):
        return
    if not isinstance(config_loader.__dict__.get("load_sweep_config"), FastSweepConfigs):
        config_loader.load_sweep_config = FastSweepConfigs(config_loader,
                                                           config_loader.load_sweep_config)
