"""The model adapter: what the engine builds a member's model from, inside the program.

The user's model says what it is by its type (`hpjax.config.target.model_kind`): a
`flax.linen.Module` class, a `flax.nnx.Module` class, an `equinox.Module` class, or a function
returning a pair of plain functions `(init, apply)`. Each kind has one implementation of
`hpjax.engine.models._base.Model` (`init`, `apply`, `module`, `intermediates`), the pure
functions the trainer vmaps; the rest of the engine does not know which kind it trains."""

import importlib
from typing import Any

from hydra.utils import get_class

from hpjax.config.model import ModelSpec
from hpjax.config.target import model_kind
from hpjax.engine.models._base import Model

_ADAPTERS = {"linen": "linen.LinenModel", "nnx": "nnx.NNXModel",
             "equinox": "equinox.EquinoxModel", "functions": "functions.FunctionsModel"}


def adapter(kind: str) -> type:
    """The adapter class of a kind (imported on use: Equinox is an optional extra)."""
    module, _, name = _ADAPTERS[kind].partition(".")
    return getattr(importlib.import_module(f"hpjax.engine.models.{module}"), name)


def build(model_cfg: Any, num_classes: int) -> Model:
    """The adapter of a validated model config (a built-in's or a `_target_`'s)."""
    spec: ModelSpec = model_cfg.spec(num_classes)
    obj = spec.target if not isinstance(spec.target, str) else get_class(spec.target)
    name = spec.target if isinstance(spec.target, str) else model_cfg._target_
    return adapter(model_kind(obj))(obj, spec.static, spec.traced, spec.fill, name,
                                    trusted=spec.trusted)
