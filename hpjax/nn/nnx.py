"""Pieces for your own Flax NNX module whose numbers hpjax traces (`model._traced_`).

An NNX module keeps a traced constructor argument in an `nnx.Variable` (`self.scale =
nnx.Variable(scale)`): hpjax builds the module with the member's number at every step, so it
is never trained nor saved. `flax.nnx.Dropout` refuses a traced rate (`if self.rate == 0`);
`hpjax.nn.nnx.Dropout` takes one, with nnx.Dropout's constructor and call.

Examples:
  >>> from flax import nnx
  >>> import hpjax.nn, hpjax.nn.nnx
  >>> class MLP(nnx.Module):
  ...     def __init__(self, features: int, num_classes: int, dropout: float = 0.0,
  ...                  activation: int = 0, *, rngs: nnx.Rngs):
  ...         self.hidden = nnx.Linear(64, features, rngs=rngs)
  ...         self.drop = hpjax.nn.nnx.Dropout(dropout, rngs=rngs)  # dropout: in _traced_
  ...         self.out = nnx.Linear(features, num_classes, rngs=rngs)
  ...         self.activation = nnx.Variable(activation)  # filled by hpjax, traced
  ...     def __call__(self, x):
  ...         x = hpjax.nn.activation(self.hidden(x), self.activation.get_value())
  ...         return self.out(self.drop(x))
"""

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hpjax.nn import dropout, noise_words


class Dropout(nnx.Module):
    """`flax.nnx.Dropout` whose `rate` may be a traced scalar (`hpjax.nn.dropout`'s masks),
    held in an `nnx.Variable`. `Module.train()`/`eval()` switch it (`deterministic`), and it
    draws from the `dropout` stream of the `rngs` it is built with.
    """

    def __init__(self, rate: float | jax.Array, *, broadcast_dims: Sequence[int] = (),
                 deterministic: bool = False, rng_collection: str = "dropout",
                 rngs: Optional[nnx.Rngs] = None) -> None:
        self.rate = nnx.Variable(jnp.asarray(rate, jnp.float32))
        self.broadcast_dims = tuple(broadcast_dims)
        self.deterministic = deterministic
        self.rngs = rngs[rng_collection].fork() if rngs is not None else None

    def __call__(self, inputs: jax.Array, *, deterministic: Optional[bool] = None,
                 rngs: Optional[nnx.Rngs | jax.Array] = None) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic:
            return inputs
        if isinstance(rngs, jax.Array):
            key = rngs
        elif rngs is not None:
            key = rngs.dropout()
        elif self.rngs is not None:
            key = self.rngs()
        else:
            raise ValueError("hpjax.nn.nnx.Dropout needs rngs= (at construction or call) "
                             "when it is not deterministic")
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        words = jax.random.bits(key, (noise_words(shape),), jnp.uint32)
        if not self.broadcast_dims:
            return dropout(inputs, self.rate[...], words)
        scale = dropout(jnp.ones(shape, inputs.dtype), self.rate[...], words)
        return inputs * jnp.broadcast_to(scale, inputs.shape)
