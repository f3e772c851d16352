"""A search space checked before anything is written, and conditional on its config groups.

A swept key that exists only under some choices of a swept group (Adam's `optimizer.b1` when
`optimizer=choice(adam, sgd)`) is asked only when the trial's choice has it: the trial asks its
groups first, then the keys of its choices (Optuna's define-by-run). Before the study or any
directory exists, the space is composed once per combination of group choices and once per
checked value of each key (every value of a list, the ends of a range or interval), and each
config is validated as a trial would be: a typo, a wrong type or a value out of range is one
`SweepError` naming the override.
"""

import copy
import itertools
from collections.abc import Callable
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ._search import Param, SearchSpace, SearchSpaceError


class SweepError(SearchSpaceError):
    """A sweep that cannot run as given: reported as one line, exit code 2, nothing written."""


def _plain(key: str) -> str:
    return key.lstrip("+~")


def _exists(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (a dotted path) is a key of the composed config."""
    if key.startswith("+"):
        return True  # a key the override adds: validation says whether the schema has it
    parent, _, leaf = _plain(key).rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    return OmegaConf.is_dict(node) and leaf in list(node.keys())


def _check_values(p: Param) -> list:
    """The values of a key that are composed and validated: a list whole, a range or an
    interval at its ends."""
    import optuna.distributions as d

    dist = p.distribution
    if isinstance(dist, d.CategoricalDistribution):
        values = list(dist.choices)
        return values if len(values) <= 32 else [values[0], values[-1]]
    return [dist.low, dist.high]


class ConditionalSpace:
    """A `SearchSpace` whose keys may exist under only some choices of its swept groups."""

    def __init__(self, space: SearchSpace, groups: list[str], active: dict[tuple, set]):
        self.space, self.groups, self.active = space, groups, active
        self.by_key = {p.key: p for p in space.params}

    @property
    def conditional(self) -> bool:
        every = set.intersection(*self.active.values()) if self.active else set()
        return any(keys != every for keys in self.active.values())

    # the interface of SearchSpace, as the sweeper uses it
    items = property(lambda self: self.space.items)
    params = property(lambda self: self.space.params)
    distributions = property(lambda self: self.space.distributions)

    @property
    def grid_distributions(self) -> dict[str, Any]:
        return self.space.grid_distributions

    def keys_for(self, values: dict) -> set:
        """The keys a trial asks, given its group choices."""
        return self.active[tuple(str(values[g]) for g in self.groups)]

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [item.override(values[item.key]) if isinstance(item, Param) else item
                for item in self.space.items
                if not isinstance(item, Param) or item.key in values]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination in the basic sweeper's order, each point without the keys its
        group choices do not have (so a conditional key multiplies only its own choices)."""
        points, seen = [], set()
        for point in self.space.grid():
            keys = self.keys_for(point) | set(self.groups)
            kept = {k: v for k, v in point.items() if k in keys}
            marker = tuple(sorted(kept.items()))
            if marker not in seen:
                seen.add(marker)
                points.append(kept)
        return points

    def ask(self, study: Any, distributions: dict) -> Any:
        """A new trial: its groups first, then the keys its choices have (define-by-run); an
        unconditional space asks everything at once, as `study.ask(distributions)`."""
        if not self.conditional:
            return study.ask(distributions)
        trial = study.ask()
        values = {g: _suggest(trial, g, distributions[g]) for g in self.groups}
        for key in self.keys_for(values):
            if key not in values:
                _suggest(trial, key, distributions[key])
        return trial


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def check(space: SearchSpace, *, compose: Callable[[list], DictConfig],
          is_group: Callable[[str], bool],
          validate: Optional[Callable[[DictConfig], Any]] = None) -> ConditionalSpace:
    """Composes (and, given `validate`, validates) the space's configs before the sweep: one
    per combination of group choices with each key at its first value, and each checked value
    of each key under the first combination that has the key.

    Raises:
      SweepError: naming the override that cannot run and why.
    """
    fixed = [item for item in space.items if isinstance(item, str)]
    groups = [p for p in space.params if not p.key.startswith("+") and is_group(p.key)]
    keys = [p for p in space.params if p not in groups]
    combos = list(itertools.product(*(_check_values(g) for g in groups)))
    if len(combos) > 256:
        raise SweepError(f"{len(combos)} combinations of config groups ("
                         f"{', '.join(g.key for g in groups)}): at most 256 can be checked")

    def run(overrides: list, what: str) -> DictConfig:
        try:
            cfg = compose(overrides)
        except Exception as e:  # noqa: BLE001  (Hydra's and OmegaConf's errors, one line)
            raise SweepError(f"{what}: {_first_line(e)}") from None
        if validate is not None:
            task = copy.deepcopy(cfg)
            with read_write(task), open_dict(task):
                task.pop("hydra", None)
            try:
                validate(task)
            except Exception as e:  # noqa: BLE001  (a ConfigError names its key and value)
                key = getattr(e, "key", None)
                raise SweepError(_first_line(e) if key else f"{what}: {_first_line(e)}") \
                    from None
        return cfg

    active: dict[tuple, set] = {}
    bases: dict[tuple, list] = {}
    for combo in combos:
        chosen = [g.override(v) for g, v in zip(groups, combo, strict=True)]
        where = " ".join(chosen) or "the config"
        cfg = run(fixed + chosen, where)
        active[tuple(str(v) for v in combo)] = {g.key for g in groups} | {
            p.key for p in keys if _exists(cfg, p.key)}
        bases[tuple(str(v) for v in combo)] = chosen
    for p in keys:
        under = [c for c, ks in active.items() if p.key in ks]
        if not under:
            under_groups = (" under any choice of " + ", ".join(g.key for g in groups)
                            if groups else "")
            raise SweepError(
                f"{p.key}: no such key in the config{under_groups} (a typo? `hpjax --cfg job` "
                "lists the keys; `+key=...` adds a new one)")
        first = active[under[0]]
        base = bases[under[0]] + [q.override(_check_values(q)[0]) for q in keys
                                  if q.key in first and q is not p]
        for value in _check_values(p):
            run(fixed + base + [p.override(value)], p.override(value))
    return ConditionalSpace(space, [g.key for g in groups], active)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


__all__ = ["ConditionalSpace", "SweepError", "check"]
