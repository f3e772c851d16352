"""What every model adapter shares: the interface the trainer calls, the flat dictionaries a
model's arrays are kept in, and which of them a constructor computes from traced numbers."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

Variables = dict  # {"params": {name: array}, and other collections such as "state"}


class Model:
    """A user's model as the trainer sees it: pure functions of a member's traced constructor
    arguments (`model_hp`), its variables and a batch. The static constructor arguments are
    fixed; the traced ones (`traced`, `model._traced_`) and the activation fields hpjax fills
    (`fill`) come from `model_hp` at every call, so a sweep over them compiles once. `trusted`:
    hpjax's own modules, which skip the checks of a user's (`hpjax.engine.trainer.check_model`).
    """

    kind = ""

    def __init__(self, obj: Any, static: Mapping, traced: tuple, fill: tuple, target: str,
                 trusted: bool = False) -> None:
        self.cls, self.static, self.traced, self.fill, self.target = (obj, dict(static), traced,
                                                                      fill, target)
        self.trusted = trusted
        self._layouts: dict = {}  # a kind's facts about the built model, by `layout_key`

    def arguments(self, model_hp: Mapping[str, Any]) -> dict:
        """The constructor's keyword arguments: the static ones and the member's numbers."""
        return {**self.static, **{k: model_hp[k] for k in (*self.traced, *self.fill)}}

    def init(self, model_hp: Mapping, key: jax.Array, x: jax.Array) -> Variables:
        """A member's initial variables; `x` a batch of the input's shape."""
        raise NotImplementedError

    def apply(self, model_hp: Mapping, variables: Variables, x: jax.Array,
              key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
        """(outputs for the batch `x`, the updated collections other than params); `key`: a
        training step's dropout randomness; None evaluates."""
        raise NotImplementedError

    def module(self, model_hp: Mapping, variables: Variables) -> Any:
        """The user's own object with the variables in, in evaluation mode (`hpjax.load`)."""
        raise NotImplementedError

    def intermediates(self, model_hp: Mapping, variables: Variables, x: jax.Array) -> tuple:
        """(outputs, the layers' outputs) of an evaluation pass: what a training step keeps
        for its backward pass, for the memory estimate of `hpjax.engine.batch`. Layers are
        the matrix products and convolutions of the pass."""
        closed = jax.make_jaxpr(lambda v, x: self.apply(model_hp, v, x)[0])(variables, x)
        shapes = [v.aval for v in _layer_outputs(closed.jaxpr)]
        return self.apply(model_hp, variables, x)[0], [jnp.zeros(a.shape, a.dtype)
                                                       for a in shapes]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.target}, static={self.static}, "
                f"traced={self.traced})")


def _layer_outputs(jaxpr: Any) -> list:
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            out.extend(eqn.outvars)
        for sub in jax_core.jaxprs_in_params(eqn.params):
            out.extend(_layer_outputs(sub))
    return out


def _part(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_name(path: Sequence) -> str:
    """A leaf's name from its pytree path: `layers.0.kernel` (an NNX Variable's trailing
    `.value` left out)."""
    parts = [_part(k) for k in path]
    if len(parts) > 1 and parts[-1] == "value" and type(path[-1]).__name__ == "GetAttrKey":
        parts = parts[:-1]
    return ".".join(parts)


def named_leaves(tree: Any, is_leaf: Optional[Callable] = None) -> list[tuple[str, Any]]:
    return [(path_name(p), leaf) for p, leaf in
            jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]]


def to_dict(tree: Any, names: Optional[set] = None) -> dict:
    """The tree's array leaves (those in `names`, if given) as one flat dict by name: what
    `TrainState.params` holds and `params.msgpack` saves, readable without the model."""
    return {n: leaf for n, leaf in named_leaves(tree)
            if (names is None or n in names) and isinstance(leaf, jax.Array | jax.ShapeDtypeStruct)}


def replace(tree: Any, values: Mapping[str, Any]) -> Any:
    """The tree with the leaves named in `values` replaced by them."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return treedef.unflatten([values.get(path_name(p), leaf) for p, leaf in leaves])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.generic)) or (isinstance(v, np.ndarray) and v.ndim == 0)


def layout_key(model_hp: Mapping) -> tuple:
    """Which of a member's numbers are traced in this call (the others are Python numbers)."""
    return tuple(sorted(k for k, v in model_hp.items() if not _is_number(v)))


def traced_names(construct: Callable[[dict], Any], model_hp: Mapping) -> set:
    """The names of the arrays that `construct(model_hp)` computes from the traced values of
    `model_hp`: a member's traced numbers as the model keeps them. They are rebuilt from the
    member's numbers at every step, never trained nor saved. Found by following the data flow
    of the traced constructor (nothing runs)."""
    names: list[str] = []
    fixed = {k: v for k, v in model_hp.items() if _is_number(v)}

    def arrays(hp: dict) -> list:
        leaves = [(n, leaf) for n, leaf in named_leaves(construct({**fixed, **hp}))
                  if isinstance(leaf, jax.Array)]
        names.extend(n for n, _ in leaves)
        return [leaf for _, leaf in leaves]

    traced = {k: jnp.zeros(jnp.shape(v), jnp.result_type(v)) for k, v in model_hp.items()
              if k not in fixed}
    jaxpr = jax.make_jaxpr(arrays)(traced).jaxpr
    tainted = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(isinstance(v, jax_core.Var) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return {n for n, v in zip(names, jaxpr.outvars, strict=True)
            if isinstance(v, jax_core.Var) and v in tainted}
