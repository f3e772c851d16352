"""Population-based training (Jaderberg et al. 2017) inside one population.

Every `interval` epochs the host ranks the members by their objective at that epoch; each of the
bottom `fraction` copies a random member of the top `fraction` (exploit: parameters, optimizer
state, PRNG keys, best-epoch tracker and traced numbers, gathered on the device) and then
explores: each searched key is multiplied by 0.8 or 1.2 (kept within its bounds), or with
`resample_probability` drawn anew from its range. Only traced numbers change, so nothing
recompiles. Each member keeps its lineage and the schedule of values its parameters were trained
with (inherited from its donors); `train.hparam_schedule` replays such a schedule in one run.
"""

import dataclasses
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hpjax.config import Config, ConfigError
from hpjax.engine.hparams import hparams
from hpjax.engine.schedulers.base import (
    CONTINUE,
    PAUSE,
    Decision,
    Exploit,
    FullTraining,
    TrialResult,
    rank_key,
)


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with dotted keys (`optimizer.lr`) set to new values."""
    for key, value in values.items():
        *path, name = key.split(".")
        nodes = [cfg]
        for part in path:
            nodes.append(getattr(nodes[-1], part))
        node = dataclasses.replace(nodes[-1], **{name: value})
        for parent, part in zip(reversed(nodes[:-1]), reversed(path), strict=True):
            node = dataclasses.replace(parent, **{part: node})
        cfg = node
    return cfg


def value_of(cfg: Config, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_keys(cfg: Config, keys: list[str]) -> None:
    """PBT changes traced numbers only: a key that shapes the program (or is not a number)
    cannot change in a running population."""
    hp = hparams(cfg)
    allowed = sorted(f"{g}.{k}" for g, values in hp.items() for k, v in values.items()
                     if np.asarray(v).dtype == np.float32)
    for key in keys:
        group, _, name = key.rpartition(".")
        v = hp.get(group, {}).get(name)
        if v is None or np.asarray(v).dtype != np.float32:
            raise ConfigError(key, value_of(cfg, key) if group else key,
                              "PBT changes traced numbers only, not this key; it can change "
                              f"{', '.join(allowed)} (search the others with another algorithm)")


@dataclass
class Bounds:
    """A searched key's range: PBT keeps explored values inside it."""

    low: float
    high: float
    log: bool = False

    def clip(self, value: float) -> float:
        return float(min(max(value, self.low), self.high))

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


@dataclass
class PBT(FullTraining):
    """Exploit and explore as a `hpjax.engine.schedulers.base.Scheduler`: every `interval`
    epochs (the last excepted) each trial waits until every trial still training has reported
    that epoch; then each of the bottom `fraction` is told to copy (`Exploit`) a random one of
    the top `fraction`, with explored values."""

    bounds: dict[str, Bounds]  # the searched keys
    interval: int = 4
    fraction: float = 0.25
    resample_probability: float = 0.25
    seed: int = 0
    mode: str = "max"  # the objective's direction
    rng: Any = None
    copies: list = field(default_factory=list)  # (epoch, donor trial, recipient trial)
    trials: list = field(default_factory=list)  # in order of adding
    done: set = field(default_factory=set)  # trials that ended
    reports: dict = field(default_factory=dict)  # epoch -> {trial: (value, its values)}
    plans: dict = field(default_factory=dict)  # epoch -> {recipient: Exploit}
    waiting: dict = field(default_factory=dict)  # trial -> the epoch it waits at

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def explores(self) -> list[str]:  # type: ignore[override]
        return list(self.bounds)

    def on_trial_add(self, trial: Hashable) -> None:
        if trial not in self.trials:
            self.trials.append(trial)

    def on_trial_result(self, trial: Hashable, result: TrialResult) -> Decision:
        if result.epoch % self.interval or result.last:
            return CONTINUE
        self.reports.setdefault(result.epoch, {})[trial] = (result.value, result.values)
        self.waiting[trial] = result.epoch
        return self.decide(trial)

    def decide(self, trial: Hashable) -> Decision:
        epoch = self.waiting.get(trial)
        if epoch is None:
            return CONTINUE
        if epoch not in self.plans:
            reported = self.reports.get(epoch, {})
            if any(t not in reported for t in self.trials if t not in self.done):
                return PAUSE
            self.plans[epoch] = self._plan(epoch, reported)
        del self.waiting[trial]
        return self.plans[epoch].get(trial, CONTINUE)

    def on_trial_complete(self, trial: Hashable, result: Optional[TrialResult]) -> None:
        self.done.add(trial)
        self.waiting.pop(trial, None)

    def _plan(self, epoch: int, reported: dict) -> dict:
        """The bottom `fraction` copy a random one of the top `fraction`, ranked by this
        epoch's objective (the first trial's mode)."""
        live = [t for t in self.trials if t in reported and reported[t][0] is not None]
        ranked = sorted(live, key=lambda t: rank_key(reported[t][0], self.mode))
        n = max(1, int(len(ranked) * self.fraction)) if len(ranked) > 1 else 0
        top, bottom = ranked[:n], ranked[len(ranked) - n:]
        if not n or set(top) & set(bottom):
            return {}
        donors = [top[int(self.rng.integers(len(top)))] for _ in bottom]
        plan = {}
        for donor, k in zip(donors, bottom, strict=True):
            values = {key: self._explore(key, reported[donor][1][key]) for key in self.bounds}
            plan[k] = Exploit(donor, values)
            self.copies.append((epoch, donor, k))
        return plan

    def save(self) -> dict:
        """What a checkpoint keeps of the explorer: its random state and its exploits."""
        return {"rng": self.rng.bit_generator.state, "copies": self.copies}

    def restore(self, state: dict) -> None:
        """Continues from a checkpoint, so later exploits are those of an uninterrupted run."""
        if state.get("rng") is not None:
            self.rng.bit_generator.state = state["rng"]
            self.copies = [tuple(c) for c in state["copies"]]

    def _explore(self, key: str, value: float) -> float:
        b = self.bounds[key]
        if self.rng.random() < self.resample_probability:
            return b.sample(self.rng)
        return b.clip(value * (0.8 if self.rng.random() < 0.5 else 1.2))


def traced_values(cfg: Config) -> dict[str, float]:
    """The config's traced float values by dotted key: what PBT and `train.hparam_schedule`
    may have changed, kept in a checkpoint."""
    out = {}
    for group, values in hparams(cfg).items():
        for name, v in values.items():
            if np.asarray(v).dtype == np.float32:
                try:
                    out[f"{group}.{name}"] = float(value_of(cfg, f"{group}.{name}"))
                except AttributeError:  # pragma: no cover  (a number not of a config key)
                    pass
    return out


def record(member: Any) -> Optional[dict]:
    """What result.json keeps of a PBT member: its lineage and its schedule."""
    if member.schedule is None:
        return None
    return {"lineage": member.lineage, "schedule": member.schedule, "root": member.root}


__all__ = ["PBT", "Bounds", "check_keys", "record", "traced_values", "value_of",
           "with_values"]
