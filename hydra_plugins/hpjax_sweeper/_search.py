"""Search spaces written in Hydra's override grammar, and the Optuna samplers that search them.

| override                         | distribution                                       |
|----------------------------------|----------------------------------------------------|
| `a,b,c` or `choice(a, b, c)`     | categorical, also of group options: `optimizer=...` |
| `range(start, stop[, step])`     | start, start+step, ... < stop, as the basic sweeper |
| `interval(low, high)`            | floats, uniform in [low, high]                     |
| `tag(log, interval(low, high))`  | floats, log-uniform                                |
| `tag(int, interval(low, high))`  | integers in [low, high] (`tag(int, log, ...)` too) |
| `int(interval(low, high))`       | integers in [low, high], as Hydra's Optuna sweeper  |
| anything else (`train.epochs=5`) | fixed: passed to every trial                       |
"""

import itertools
import math
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

ALGORITHMS = ("grid", "random", "tpe", "gp", "cmaes", "nsga2", "qmc", "sha", "hyperband",
              "pbt")


class SearchSpaceError(ValueError):
    pass


@dataclass(frozen=True)
class Param:
    """One swept key: its Optuna distribution and, for grids, its values in Hydra's order."""

    key: str
    distribution: Any  # optuna.distributions.BaseDistribution
    grid_values: Optional[tuple] = None  # None: continuous, no grid

    def override(self, value: Any) -> str:
        # Six significant digits: the job runs with exactly the value its override shows.
        if isinstance(value, float):
            value = f"{value:.6g}"
        return f"{self.key}={value}"


@dataclass(frozen=True)
class SearchSpace:
    """The parsed overrides in command-line order: each a `Param` or a fixed override string."""

    items: tuple

    @property
    def params(self) -> list[Param]:
        return [p for p in self.items if isinstance(p, Param)]

    @property
    def distributions(self) -> dict[str, Any]:
        return {p.key: p.distribution for p in self.params}

    @property
    def grid_distributions(self) -> dict[str, Any]:
        """Every swept key as a categorical of its grid values (what a grid trial enqueues)."""
        import optuna.distributions as d

        self.grid()  # raises for continuous keys
        return {p.key: d.CategoricalDistribution(p.grid_values) for p in self.params}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The job's override list: fixed ones as given, swept ones with the trial's values."""
        return [item.override(values[item.key]) if isinstance(item, Param) else item
                for item in self.items]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination, in the order of Hydra's basic sweeper."""
        for p in self.params:
            if p.grid_values is None:
                raise SearchSpaceError(
                    f"algorithm=grid needs discrete values, but {p.key} is continuous: use "
                    f"choice(...), a,b,c or range(...) instead of interval(...)")
        keys = [p.key for p in self.params]
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(p.grid_values for p in self.params))]


def _param(o: Override) -> Param:
    import optuna.distributions as d

    key, sweep = o.get_key_element(), o.value()
    tags = set(getattr(sweep, "tags", ()))
    if isinstance(sweep, ChoiceSweep):
        values = tuple(o.sweep_string_iterator())
        return Param(key, d.CategoricalDistribution(values), values)
    if isinstance(sweep, RangeSweep):
        values = tuple(o.sweep_string_iterator())
        if not values:
            raise SearchSpaceError(f"{key}: {o.input_line} is empty")
        numbers = [sweep.start + i * sweep.step for i in range(len(values))]
        log = "log" in tags
        if all(isinstance(v, int) for v in (sweep.start, sweep.step)):
            step = 1 if log else sweep.step
            dist = d.IntDistribution(numbers[0], numbers[-1], log=log, step=step)
        else:
            if log:
                raise SearchSpaceError(f"{key}: tag(log, range(...)) needs integer steps; use "
                                       f"tag(log, interval(low, high)) for floats")
            dist = d.FloatDistribution(numbers[0], numbers[0] + (len(values) - 1) * sweep.step,
                                       step=sweep.step)
        return Param(key, dist, values)
    if isinstance(sweep, IntervalSweep):
        low, high, log = sweep.start, sweep.end, "log" in tags
        if not low < high:
            raise SearchSpaceError(f"{key}: interval({low}, {high}) needs low < high")
        if log and low <= 0:
            raise SearchSpaceError(f"{key}: tag(log, interval({low}, {high})) needs low > 0")
        # `tag(int, ...)`, or Hydra's cast `int(interval(a, b))` (Hydra's Optuna sweeper's reading)
        if "int" in tags or (isinstance(low, int) and isinstance(high, int)):
            return Param(key, d.IntDistribution(math.ceil(low), math.floor(high), log=log))
        return Param(key, d.FloatDistribution(low, high, log=log))
    raise SearchSpaceError(f"{key}: unsupported sweep {o.input_line}")


def parse(overrides: list[str]) -> SearchSpace:
    """Parses overrides such as `optimizer.lr=tag(log, interval(1e-4, 1e-1))`; a later override of
    the same key replaces an earlier one (the command line replaces `hydra.sweeper.params`)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    items: dict[str, Any] = {}
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            items[key] = _param(o)
        else:
            items[key] = f"{key}={o.get_value_element_as_str()}"
    return SearchSpace(tuple(items.values()))


def make_sampler(algorithm: str, *, seed: int, n_objectives: int = 1, batch_size: int = 1,
                 conditional: bool = False):
    """The Optuna sampler behind each algorithm (grid enqueues its points over a random sampler).

    Bayesian samplers see a batch's pending trials: TPE and GP through Optuna's constant liar.
    A conditional space (keys under some group choices only): TPE models each group of keys
    that occur together (`group=True`).
    """
    import optuna

    if algorithm in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "tpe":
        from . import _speedups  # TPE whose cost stops growing at 300 trials, where enabled

        return _speedups.tpe_sampler(seed=seed, multivariate=True, constant_liar=True,
                                     n_startup_trials=max(10, batch_size), group=conditional)
    if algorithm == "gp":
        check_installed(algorithm)
        return optuna.samplers.GPSampler(seed=seed, deterministic_objective=False)
    if algorithm == "cmaes":
        if n_objectives > 1:
            raise SearchSpaceError("algorithm=cmaes optimises one objective; use nsga2")
        return optuna.samplers.CmaEsSampler(
            seed=seed, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    if algorithm == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, batch_size))
    if algorithm == "qmc":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False)
    raise SearchSpaceError(f"hydra.sweeper.algorithm={algorithm!r}: must be one of "
                           f"{', '.join(ALGORITHMS)}")


def check_installed(algorithm: str) -> None:
    """Raises when the sampler of `algorithm` needs a package that is not installed."""
    if algorithm == "gp":
        import importlib.util

        try:
            found = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):  # (a sys.modules entry of None, as a test sets)
            found = False
        if not found:
            raise SearchSpaceError("algorithm=gp needs PyTorch (Optuna's GPSampler): "
                                   "pip install 'hpjax[gp]'")


__all__ = ["ALGORITHMS", "Param", "SearchSpace", "SearchSpaceError", "make_sampler", "parse"]
