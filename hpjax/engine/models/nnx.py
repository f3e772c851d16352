"""Flax NNX: an `nnx.Module` class built with `rngs=nnx.Rngs(...)` (streams `params` and
`dropout`). The trainer holds its `nnx.Param`s (trained) and its other variables such as
`nnx.BatchStat` (kept across steps, as Linen's `batch_stats`) as flat dicts by name; each call
builds the module with the member's traced numbers and the step's dropout key, puts those
arrays in (`nnx.update`), and switches train or eval mode as NNX does (`Module.train()` /
`eval()`: `deterministic`, `use_running_average`). The initialisers run again only in the
trace: their results are unused, and XLA drops them.

Why not `nnx.split` outside and `nnx.merge` inside: a member's traced constructor arguments live
in its module (in `nnx.Variable`s, or anywhere the constructor puts them), so a graph split once
would carry one member's numbers to every member and every later value; built inside, the module
takes each member's current numbers, and no graph crosses a JAX transform (graph and tree mode
alike)."""

from collections.abc import Mapping
from typing import Optional

import jax
from flax import nnx

from hpjax.config import ConfigError
from hpjax.engine.models._base import Model, Variables, layout_key, replace, to_dict, traced_names

_OTHER = nnx.Not(nnx.Any(nnx.Param, nnx.RngState))  # what a step may change besides params


class NNXModel(Model):
    kind = "nnx"

    def build(self, model_hp: Mapping, key: jax.Array,
              noise: Optional[jax.Array] = None) -> nnx.Module:
        rngs = nnx.Rngs(key, params=key, dropout=key if noise is None else noise)
        return self.cls(**self.arguments(model_hp), rngs=rngs)

    def _kept(self, model_hp: Mapping) -> set:
        """The names of the variables other than params that are state (not a traced number)."""
        at = layout_key(model_hp)
        if at not in self._layouts:
            key = jax.random.key(0)
            traced = traced_names(lambda h: nnx.state(self.build(h, key), _OTHER), model_hp)
            other = jax.eval_shape(
                lambda: to_dict(nnx.state(self.build(model_hp, key), _OTHER)))
            self._layouts[at] = set(other) - traced
        return self._layouts[at]

    def init(self, model_hp: Mapping, key: jax.Array, x: jax.Array) -> Variables:
        model = self.build(model_hp, key)
        state = to_dict(nnx.state(model, _OTHER), self._kept(model_hp))
        return {"params": to_dict(nnx.state(model, nnx.Param)), **({"state": state} if state
                                                                  else {})}

    def _filled(self, model_hp: Mapping, variables: Variables,
                noise: Optional[jax.Array] = None) -> nnx.Module:
        model = self.build(model_hp, jax.random.key(0), noise)
        nnx.update(model, replace(nnx.state(model, nnx.Param), variables["params"]),
                   replace(nnx.state(model, _OTHER), variables.get("state", {})))
        return model

    def apply(self, model_hp: Mapping, variables: Variables, x: jax.Array,
              key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
        model = self._filled(model_hp, variables, key)
        if key is None:
            model.eval()
        else:
            model.train()
        made = set(to_dict(nnx.state(model, nnx.Variable)))
        out = model(x)
        new = set(to_dict(nnx.state(model, nnx.Variable))) - made
        if new:
            raise ConfigError("model._target_", self.target,
                              f"creates variables in __call__ ({', '.join(sorted(new))}); an "
                              "NNX module makes them in __init__: pass the input size as a "
                              "constructor argument")
        if key is None or "state" not in variables:
            return out, {}
        return out, {"state": to_dict(nnx.state(model, _OTHER), self._kept(model_hp))}

    def module(self, model_hp: Mapping, variables: Variables) -> nnx.Module:
        model = self._filled(model_hp, variables)
        model.eval()
        return model
