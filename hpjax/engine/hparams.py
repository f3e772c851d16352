"""The one rule for which config keys shape the compiled program and which enter it as numbers,
read from the schemas' field declarations (`hpjax.config`):

- a *traced* field (`lr: float = traced(1e-3)`) reaches the compiled code as a scalar array in the
  `hp` pytree, nested by group (`hp["optimizer"]["lr"]`): trials that differ only in traced keys
  share one program, and the population engine stacks them along a member axis;
- a *per-member* field (`train.early_stopping`, `train.checkpoint_every`, `train.repeats`,
  `objective`) is read by the host loop for each member: it neither enters the program nor
  splits a population;
- every other field is *static*: it is part of `signature(cfg)`, the program's cache key, and a
  new value compiles anew. An Optional traced field's None-ness is static (`clip_norm: null`
  turns clipping off, a structural change).

`static(cfg)` is the view of a config that the program builders receive: reading a traced or
per-member field from it raises `StaticConfigError`, so no builder can bake member 0's value
into a program that every member runs. `rule_table()` renders the rule as in
docs/populations.md.
"""

import copy
import dataclasses
from typing import Any

import numpy as np

from hpjax.config import Config, choices, groups, is_per_member, is_traced
from hpjax.config._schema import TRACED


class StaticConfigError(RuntimeError):
    """A program builder read a key that differs between the members of one program."""


def _encode(f: dataclasses.Field, value: Any) -> np.ndarray:
    meta = f.metadata[TRACED]
    if meta["index_of"]:
        value = meta["index_of"].index(meta["aliases"].get(value, value))
    return np.asarray(value, meta["dtype"])


def _numbers(node: Any) -> dict:
    out = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if is_traced(f) and value is not None:
            out[f.name] = _encode(f, value)
        elif dataclasses.is_dataclass(value) and not is_per_member(f):
            nested = _numbers(value)
            if nested:
                out[f.name] = nested
    return out


def hparams(cfg: Config) -> dict[str, dict[str, np.ndarray]]:
    """The traced values of one trial by group, as NumPy scalars (a population stacks them on
    the host and sends each leaf once): `{"optimizer": {"lr": ..., ...}, "model": {...}, ...}`."""
    hp = {}
    for f in dataclasses.fields(cfg):
        numbers = _numbers(getattr(cfg, f.name))
        if numbers:
            hp[f.name] = numbers
    return hp


def _static_items(node: Any) -> tuple:
    items: list = [("type", type(node).__name__)]
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if is_per_member(f):
            continue
        if is_traced(f):
            if f.default is None:  # Optional: whether it is set shapes the program
                items.append((f.name, value is not None))
        elif dataclasses.is_dataclass(value):
            items.append((f.name, _static_items(value)))
        else:
            items.append((f.name, repr(value)))
    return tuple(items)


def signature(cfg: Config) -> tuple:
    """The static part of a config: equal signatures (and data shapes) share one program."""
    return tuple((f.name, _static_items(getattr(cfg, f.name))) for f in dataclasses.fields(cfg))


_STATIC_CLASSES: dict[type, type] = {}


def _static_class(cls: type) -> type:
    """`cls` with its traced and per-member fields unreadable (an error naming the key)."""
    if cls in _STATIC_CLASSES:
        return _STATIC_CLASSES[cls]
    hidden = {f.name: "traced" if is_traced(f) else "per member"
              for f in dataclasses.fields(cls) if is_traced(f) or is_per_member(f)}

    def __getattribute__(self: Any, name: str) -> Any:
        kind = hidden.get(name)
        if kind is None:
            return object.__getattribute__(self, name)
        value = object.__getattribute__(self, name)
        if kind == "traced" and value is None:
            return None  # an Optional traced key left unset: static structure, readable
        key = f"{object.__getattribute__(self, 'group')}.{name}"
        where = (f"read it from the traced hp[{key.split('.')[0]!r}][{name!r}]" if kind == "traced"
                 else "read it from each member's own config in the host loop")
        raise StaticConfigError(f"{key} is {kind}: the members of one program may differ in it, "
                                f"so the static config that builds the program does not hold "
                                f"it; {where}")

    def __repr__(self: Any) -> str:
        return f"static {cls.__name__}"

    static_cls = type(f"Static{cls.__name__}", (cls,), {
        "__getattribute__": __getattribute__, "__repr__": __repr__, "__eq__": object.__eq__,
        "__hash__": object.__hash__})
    _STATIC_CLASSES[cls] = static_cls
    return static_cls


def _static_node(node: Any) -> Any:
    view = copy.copy(node)
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value) and not is_per_member(f):
            object.__setattr__(view, f.name, _static_node(value))
    object.__setattr__(view, "__class__", _static_class(type(node)))
    return view


def static(cfg: Config) -> Config:
    """The view of `cfg` that program builders receive (see the module docstring)."""
    view = copy.copy(cfg)
    for f in dataclasses.fields(cfg):
        object.__setattr__(view, f.name, _static_node(getattr(cfg, f.name)))
    return view


def _describe(f: dataclasses.Field) -> str:
    meta = f.metadata[TRACED]
    if meta["index_of"]:
        return f"{f.name} (as an index)"
    return f"{f.name} (its value; null/set is static)" if f.default is None else f.name


def rule_table() -> str:
    """The traced and per-member keys of every schema, as a Markdown table."""
    rows = ["| group | traced keys | per-member keys |", "|---|---|---|"]
    for group in [*groups(), "train", "objective"]:
        if group in ("train", "objective"):
            from hpjax.config import ObjectiveConfig, TrainConfig

            schemas = [TrainConfig if group == "train" else ObjectiveConfig]
        else:
            schemas = list(choices(group).values())
        traced_keys, member_keys = {}, {}
        for schema in schemas:
            for f in dataclasses.fields(schema):
                if is_traced(f):
                    traced_keys.setdefault(_describe(f), None)
                elif is_per_member(f):
                    member_keys.setdefault(f.name, None)
        rows.append(f"| {group} | {', '.join(traced_keys) or '-'} | "
                    f"{', '.join(member_keys) or '-'} |")
    return "\n".join(rows)
