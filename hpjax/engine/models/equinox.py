"""Equinox: an `eqx.Module` class built with `key=`, called on one example
(`model(x, key=key)`, vmapped over the batch). Its trained parameters are its inexact arrays
(`eqx.is_inexact_array`) except those its constructor computes from a traced number (a
member's `model._traced_` value kept in an array field is never trained). A model with
`eqx.nn.StateIndex`es (`eqx.nn.BatchNorm(..., axis_name="batch")`) is built with
`eqx.nn.make_with_state` and called as `model(x, state, key=key) -> (out, state)`; its
`eqx.nn.State` is kept across steps. Evaluation uses `eqx.nn.inference_mode`."""

from collections.abc import Mapping
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from hpjax.engine.models._base import (
    Model,
    Variables,
    layout_key,
    named_leaves,
    replace,
    to_dict,
    traced_names,
)

BATCH_AXIS = "batch"  # the axis name of the vmap over a batch's examples (for BatchNorm)


def _is_state_index(x: Any) -> bool:
    return isinstance(x, eqx.nn.StateIndex)


class EquinoxModel(Model):
    kind = "equinox"

    def _layout(self, model_hp: Mapping) -> tuple[bool, set]:
        """(whether the model has `eqx.nn.StateIndex`es, the names of its trained arrays)."""
        at = layout_key(model_hp)
        if at not in self._layouts:
            key = jax.random.key(0)
            model = eqx.filter_eval_shape(
                lambda: self.cls(**self.arguments(model_hp), key=key))
            stateful = any(_is_state_index(x)
                           for x in jax.tree.leaves(model, is_leaf=_is_state_index))
            traced = traced_names(lambda h: self.cls(**self.arguments(h), key=key), model_hp)
            inexact = {n for n, leaf in named_leaves(model)
                       if isinstance(leaf, jax.ShapeDtypeStruct)
                       and jnp.issubdtype(leaf.dtype, jnp.inexact)}
            self._layouts[at] = stateful, inexact - traced
        return self._layouts[at]

    def build(self, model_hp: Mapping, key: jax.Array) -> tuple[Any, Any]:
        if self._layout(model_hp)[0]:
            return eqx.nn.make_with_state(self.cls)(**self.arguments(model_hp), key=key)
        return self.cls(**self.arguments(model_hp), key=key), None

    def init(self, model_hp: Mapping, key: jax.Array, x: jax.Array) -> Variables:
        model, state = self.build(model_hp, key)
        return {"params": to_dict(model, self._layout(model_hp)[1]),
                **({"state": to_dict(state)} if state is not None else {})}

    def _filled(self, model_hp: Mapping, variables: Variables) -> tuple[Any, Any]:
        model, state = self.build(model_hp, jax.random.key(0))
        model = replace(model, variables["params"])
        return model, (replace(state, variables["state"]) if state is not None else None)

    def apply(self, model_hp: Mapping, variables: Variables, x: jax.Array,
              key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
        model, state = self._filled(model_hp, variables)
        if key is None:
            model = eqx.nn.inference_mode(model)
            keys = None
        else:
            keys = jax.random.split(key, x.shape[0])
        if state is None:
            out = jax.vmap(lambda xi, ki: model(xi, key=ki))(x, keys)
            return out, {}
        out, state = jax.vmap(lambda xi, ki: model(xi, state, key=ki), axis_name=BATCH_AXIS,
                              in_axes=(0, 0), out_axes=(0, None))(x, keys)
        return out, ({} if key is None else {"state": to_dict(state)})

    def module(self, model_hp: Mapping, variables: Variables) -> Any:
        model, state = self._filled(model_hp, variables)
        model = eqx.nn.inference_mode(model)
        return model if state is None else (model, state)
