"""The model adapter: what the engine builds a member's model from, inside the program."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
from hydra.utils import get_class

from hpjax.config.model import ModelSpec


class TargetModel:
    """A flax.linen Module class (`model._target_`, or a built-in model's), built inside the
    program for each member: the static constructor arguments are fixed, the traced ones
    (`model._traced_`) and the activation fields hpjax fills (`fill`) come from the member's
    numbers. `trusted`: hpjax's own modules, which skip the checks of a user's
    (`hpjax.engine.trainer.check_model`)."""

    def __init__(self, cls: type, static: Mapping, traced: tuple, fill: tuple,
                 target: str, trusted: bool = False) -> None:
        self.cls, self.static, self.traced, self.fill, self.target = (cls, dict(static), traced,
                                                                      fill, target)
        self.trusted = trusted

    def build(self, model_hp: Mapping[str, jax.Array]) -> nn.Module:
        return self.cls(**self.static, **{k: model_hp[k] for k in (*self.traced, *self.fill)})

    def __repr__(self) -> str:
        return f"TargetModel({self.target}, static={self.static}, traced={self.traced})"


def build(model_cfg: Any, num_classes: int) -> TargetModel:
    """The adapter of a validated model config (a built-in's or a `_target_`'s)."""
    spec: ModelSpec = model_cfg.spec(num_classes)
    cls = spec.target if isinstance(spec.target, type) else get_class(spec.target)
    name = spec.target if isinstance(spec.target, str) else model_cfg._target_
    return TargetModel(cls, spec.static, spec.traced, spec.fill, name, trusted=spec.trusted)
