"""Plain functions: `_target_` names a function that takes the config's keys and returns the
pair `init(key, x) -> params` and `apply(params, x, *, train, key) -> outputs` (a tuple, or an
object with `.init` and `.apply`), as hand-written JAX gives. Every inexact array `init`
returns is trained. With `haiku`, wrap `hk.transform`'s pair to this signature."""

from collections.abc import Mapping
from typing import Any, Optional

import jax

from hpjax.engine.models._base import Model, Variables, replace, to_dict


class FunctionsModel(Model):
    kind = "functions"

    def pair(self, model_hp: Mapping) -> tuple:
        made = self.cls(**self.arguments(model_hp))
        if hasattr(made, "init") and hasattr(made, "apply"):
            return made.init, made.apply
        init, apply = made
        return init, apply

    def init(self, model_hp: Mapping, key: jax.Array, x: jax.Array) -> Variables:
        return {"params": to_dict(self.pair(model_hp)[0](key, x))}

    def _params(self, init: Any, variables: Variables, x: jax.Array) -> Any:
        template = jax.eval_shape(init, jax.random.key(0), x)
        return replace(template, variables["params"])

    def apply(self, model_hp: Mapping, variables: Variables, x: jax.Array,
              key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
        init, apply = self.pair(model_hp)
        return apply(self._params(init, variables, x), x, train=key is not None, key=key), {}

    def module(self, model_hp: Mapping, variables: Variables) -> Any:
        """The trained `apply` with its parameters bound: `module(x) -> outputs`."""
        init, apply = self.pair(model_hp)

        def module(x: Any) -> Any:
            return apply(self._params(init, variables, x), x, train=False, key=None)

        return module
