"""Pieces for your own Equinox module whose numbers hpjax traces (`model._traced_`).

A traced constructor argument arrives as a JAX scalar; an Equinox module keeps it in a field,
and hpjax holds every array its constructor computes from a traced number out of the
optimizer (it is rebuilt from the member's number at every step, never trained nor saved).
`equinox.nn.Dropout` takes a traced `p` too (a float per unit from `jax.random.bernoulli`);
`hpjax.nn.eqx.Dropout` draws hpjax's byte masks (`hpjax.nn.dropout`), as `hpjax.nn.Dropout`
does for Linen, with eqx.nn.Dropout's call.

Examples:
  >>> import equinox as eqx, jax
  >>> import hpjax.nn, hpjax.nn.eqx
  >>> class MLP(eqx.Module):
  ...     hidden: eqx.nn.Linear
  ...     drop: hpjax.nn.eqx.Dropout
  ...     out: eqx.nn.Linear
  ...     def __init__(self, features: int, num_classes: int, dropout: float = 0.0, *, key):
  ...         k1, k2 = jax.random.split(key)
  ...         self.hidden = eqx.nn.Linear(64, features, key=k1)
  ...         self.drop = hpjax.nn.eqx.Dropout(dropout)  # dropout: in _traced_
  ...         self.out = eqx.nn.Linear(features, num_classes, key=k2)
  ...     def __call__(self, x, *, key=None):  # one example
  ...         return self.out(self.drop(jax.nn.relu(self.hidden(x)), key=key))
"""

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from hpjax.nn import dropout, noise_words


class Dropout(eqx.Module):
    """`equinox.nn.Dropout` with `hpjax.nn.dropout`'s masks: `p` may be traced; it is rounded
    to a multiple of 1/256 and kept units are scaled by the realised keep probability.
    `eqx.nn.inference_mode` switches it off (`inference`)."""

    p: jax.Array
    inference: bool = False

    def __init__(self, p: float | jax.Array = 0.5, inference: bool = False) -> None:
        self.p = jnp.asarray(p, jnp.float32)
        self.inference = inference

    def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None,
                 inference: Optional[bool] = None) -> jax.Array:
        if self.inference if inference is None else inference:
            return x
        if key is None:
            raise RuntimeError("hpjax.nn.eqx.Dropout needs a key when not in inference mode")
        words = jax.random.bits(key, (noise_words(x.shape),), jnp.uint32)
        return dropout(x, jax.lax.stop_gradient(self.p), words)
