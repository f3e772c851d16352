"""Flax Linen: a `flax.linen.Module` class, built for each call with the member's numbers as
constructor arguments; its variables are Linen's own (`{"params": ..., "batch_stats": ...}`)."""

from collections.abc import Mapping
from typing import Optional

import flax.linen as nn
import jax

from hpjax.engine.models._base import Model, Variables


class LinenModel(Model):
    kind = "linen"

    def build(self, model_hp: Mapping[str, jax.Array]) -> nn.Module:
        return self.cls(**self.arguments(model_hp))

    def init(self, model_hp: Mapping, key: jax.Array, x: jax.Array) -> Variables:
        variables = self.build(model_hp).init({"params": key, "dropout": key}, x, train=False)
        return {k: v for k, v in variables.items() if k != "intermediates"}

    def apply(self, model_hp: Mapping, variables: Variables, x: jax.Array,
              key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
        module = self.build(model_hp)
        if key is None:
            return module.apply(variables, x, train=False), {}
        mutable = [k for k in variables if k != "params"]
        if mutable:
            return module.apply(variables, x, train=True, rngs={"dropout": key},
                                mutable=mutable)
        return module.apply(variables, x, train=True, rngs={"dropout": key}), {}

    def module(self, model_hp: Mapping, variables: Variables) -> nn.Module:
        return self.build(model_hp)

    def intermediates(self, model_hp: Mapping, variables: Variables, x: jax.Array) -> tuple:
        return self.build(model_hp).apply(variables, x, train=False,
                                          capture_intermediates=True,
                                          mutable=["intermediates"])
