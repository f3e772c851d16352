"""Population-based training (Jaderberg et al. 2017) inside one population.

Every `interval` epochs the host ranks the members by their objective at that epoch; each of the
bottom `fraction` copies a random member of the top `fraction` (exploit: parameters, optimizer
state, PRNG keys, best-epoch tracker and traced numbers, gathered on the device) and then
explores: each searched key is multiplied by 0.8 or 1.2 (kept within its bounds), or with
`resample_probability` drawn anew from its range. Only traced numbers change, so nothing
recompiles. Each member keeps its lineage and the schedule of values its parameters were trained
with (inherited from its donors); `train.hparam_schedule` replays such a schedule in one run.
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hpjax.config import Config, ConfigError
from hpjax.engine.hparams import hparams


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
class PBT:
    """The exploit-and-explore step, called by the host loop after every epoch."""

    bounds: dict[str, Bounds]  # the searched keys
    interval: int = 4
    fraction: float = 0.25
    resample_probability: float = 0.25
    seed: int = 0
    rng: Any = None
    copies: list = field(default_factory=list)  # (epoch, donor member, recipient member)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def start(self, members: list) -> None:
        for k, m in enumerate(members):
            m.lineage = []
            m.schedule = [{"epoch": 1, "train.seed": m.cfg.train.seed,
                           **{key: value_of(m.cfg, key) for key in self.bounds}}]
            m.root = k

    def __call__(self, epoch: int, run: Any) -> None:
        members = run.members
        last = members[0].cfg.train.epochs
        if epoch % self.interval or epoch >= last:
            return
        objective = members[0].cfg.objective
        live = [k for k, m in enumerate(members) if m.active and m.slot is not None]
        score = {k: members[k].outcome.rows[-1][objective.metric] for k in live}
        ranked = sorted(live, key=lambda k: -score[k] if objective.mode == "max" else score[k])
        n = max(1, int(len(ranked) * self.fraction)) if len(ranked) > 1 else 0
        top, bottom = ranked[:n], ranked[len(ranked) - n:]
        if not n or set(top) & set(bottom):
            return
        pairs = [(int(self.rng.choice(top)), k) for k in bottom]
        run.copy_members([(members[d].slot, members[r].slot) for d, r in pairs])
        for donor, k in pairs:
            d, m = members[donor], members[k]
            values = {key: self._explore(key, value_of(d.cfg, key)) for key in self.bounds}
            m.tracker = copy.deepcopy(d.tracker)
            m.cfg = with_values(d.cfg, values)
            m.lineage = d.lineage + [{"epoch": epoch, "donor": donor}]
            m.schedule = d.schedule + [{"epoch": epoch + 1, **values}]
            m.root = d.root
            run.set_hparams(m)
            self.copies.append((epoch, donor, k))

    def state(self) -> dict:
        """What a checkpoint keeps of the explorer: its random state and its exploits."""
        return {"rng": self.rng.bit_generator.state, "copies": self.copies}

    def resume(self, members: list, metas: list[dict]) -> None:
        """Continues from checkpoints' `meta`s: each member's lineage, schedule and root, and
        the explorer's state, so later exploits are those of an uninterrupted run."""
        for m, meta in zip(members, metas, strict=True):
            if meta.get("pbt"):
                m.lineage, m.schedule, m.root = (meta["pbt"]["lineage"], meta["pbt"]["schedule"],
                                                 meta["pbt"]["root"])
        saved = next((meta["explorer"] for meta in metas if meta.get("explorer")), None)
        if saved is not None:
            self.rng.bit_generator.state = saved["rng"]
            self.copies = [tuple(c) for c in saved["copies"]]

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
    if not hasattr(member, "schedule"):
        return None
    return {"lineage": member.lineage, "schedule": member.schedule, "root": member.root}


__all__ = ["PBT", "Bounds", "check_keys", "record", "traced_values", "value_of",
           "with_values"]
