"""The schema machinery: field markers for the traced rule, the registry of choices, validation.

Every config group's choices are dataclasses deriving from `Schema`; a class with a `choice`
registers itself as `<group>/base_<choice>` (the YAML files extend it), so the classes are the
one list of what each group offers. A field declared `traced(...)` reaches the compiled program as
a number (`hpjax.engine.hparams`); a field declared `per_member(...)` is read by the host loop for
each member; every other field is static and part of the program's signature.
"""

import dataclasses
import math
from dataclasses import field
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

TRACED, PER_MEMBER = "hpjax_traced", "hpjax_per_member"


class ConfigError(ValueError):
    """A config value that hpjax cannot run with: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={show(value)}: {allowed}")

    @classmethod
    def line(cls, message: str) -> "ConfigError":
        """A check's one line as written (`logger=wandb needs the wandb package, ...`): its key
        is what precedes the first `=`."""
        key, _, rest = message.partition("=")
        error = cls(key, None, rest)
        error.args = (message,)
        return error


def show(value: Any) -> str:
    if value == MISSING:
        return MISSING
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def traced(default: Any, *, dtype: str = "float32", index_of: Optional[tuple] = None,
           aliases: Optional[dict] = None) -> Any:
    """A field whose value enters the compiled program as a traced scalar of `dtype`.

    `index_of`: a string field traced as its index into this tuple (`aliases` maps other names
    to entries of it). An Optional field's None-ness is static (it shapes the program); its value,
    when set, is traced.
    """
    return field(default=default, metadata={TRACED: {"dtype": "int32" if index_of else dtype,
                                                     "index_of": index_of,
                                                     "aliases": aliases or {}}})


def per_member(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING
               ) -> Any:
    """A field the host loop reads for each member (early stopping, checkpoints, objective):
    neither traced nor in the program's signature."""
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={PER_MEMBER: True})
    return field(default=default, metadata={PER_MEMBER: True})


def is_traced(f: dataclasses.Field) -> bool:
    return TRACED in f.metadata


def is_per_member(f: dataclasses.Field) -> bool:
    return PER_MEMBER in f.metadata


_REGISTRY: dict[str, dict[str, type]] = {}


class Schema:
    """Base of every config node: the group path it lives at, its registered choice and checks.

    `class AdamConfig(OptimizerConfig, choice="adam")` registers the class as the optimizer
    group's `adam`; `aliases` are other `name`s a YAML file of that schema may use.
    """

    group: ClassVar[str] = ""
    choice: ClassVar[Optional[str]] = None
    aliases: ClassVar[tuple] = ()

    def __init_subclass__(cls, choice: Optional[str] = None, aliases: tuple = (),
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if choice is not None:  # a subclass without a choice of its own keeps its parent's
            cls.choice, cls.aliases = choice, tuple(aliases)
            _REGISTRY.setdefault(cls.group, {})[choice] = cls

    def _check(self, name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{self.group}.{name}", getattr(self, name), allowed)

    def _check_name(self) -> None:
        """`name` is the label of the choice: this schema's own or one of its aliases."""
        names = (self.choice, *self.aliases)
        self._check("name", self.name in names,
                    f"must be {' or '.join(names)} for this schema; choose another with "
                    f"{self.group}=<choice> (`hpjax --help` lists them)")

    def _check_choice(self, name: str, choices: tuple) -> None:
        self._check(name, getattr(self, name) in choices, "must be one of " + ", ".join(choices))

    def _check_fraction(self, name: str, low_open: bool = False) -> None:
        v = getattr(self, name)
        if low_open:
            self._check(name, 0 < v < 1, "must be in (0, 1)")
        else:
            self._check(name, 0 <= v < 1, "must be in [0, 1)")

    def _check_positive(self, name: str) -> None:
        v = getattr(self, name)
        self._check(name, math.isfinite(v) and v > 0, "must be a finite number > 0")

    def _check_non_negative(self, name: str) -> None:
        v = getattr(self, name)
        self._check(name, math.isfinite(v) and v >= 0, "must be a finite number >= 0")


INT32 = (-2**31, 2**31 - 1)


def check_int32(node: Any) -> None:
    """Every integer traced as an int32 in a config tree fits one. NumPy 2 raises OverflowError
    on a larger Python int and NumPy 1 wraps it (a warning, then another seed), so hpjax checks
    the range itself, before anything trains."""
    if not dataclasses.is_dataclass(node):
        return
    for f in dataclasses.fields(node):
        value, spec = getattr(node, f.name), f.metadata.get(TRACED)
        if spec and spec["dtype"] == "int32" and not spec["index_of"] and isinstance(value, int) \
                and not INT32[0] <= value <= INT32[1]:
            raise ConfigError(f"{node.group}.{f.name}", value,
                              f"must be an integer between {INT32[0]} and {INT32[1]} (an int32 "
                              "in the compiled program)")
        check_int32(value)


def choices(group: str) -> dict[str, type]:
    """The registered schemas of a config group, by choice name."""
    return dict(_REGISTRY.get(group, {}))


def groups() -> list[str]:
    return list(_REGISTRY)
