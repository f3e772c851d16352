"""The floor for scripts/bench_sweep.py: the same 32-trial sweep as one hand-written
`jit(vmap(train))`, every epoch inside one nested `lax.scan`, no Hydra, no files."""

import itertools
import sys
import time

import jax
import jax.numpy as jnp
from hydra import compose, initialize_config_dir

from hpjax import data as data_lib
from hpjax.cli import CONF_DIR, register
from hpjax.config import ACTIVATIONS, to_config
from hpjax.engine import trainer
from hpjax.engine.hparams import hparams, static
from hpjax.engine.model import build as build_model

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 20

register()
with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
    cfgs = [to_config(compose("config", overrides=[
        f"optimizer.lr={lr}", f"model.dropout={d}", f"train.seed={s}", "activation=relu",
        f"train.epochs={EPOCHS}"])) for lr, d, s in itertools.product(
        (1e-4, 3e-4, 1e-3, 3e-3), (0, 0.1, 0.3, 0.5), (0, 1))]
ds = data_lib.load(cfgs[0].data)
# Every trial uses relu: a hand-written script compiles just that one activation.
spec = trainer.Spec(static(cfgs[0]), build_model(cfgs[0].model, ds.num_classes), ds.input_shape,
                    ds.n_train, activation=ACTIVATIONS.index("relu"))
hp = jax.tree.map(lambda *xs: jnp.stack(xs), *[hparams(c) for c in cfgs])
x, y, xv, yv = map(jnp.asarray, (ds.x_train, ds.y_train, ds.x_val, ds.y_val))


def train(hp):
    state = trainer.init_state(spec, hp, trainer.init_params(spec, hp["train"]["seed"]))

    def epoch(state, _):
        def step(s, idx):
            return trainer.train_step(spec, hp, x, y, s, idx,
                                      trainer.noise(spec, s.dropout_key, s.step))

        state, (loss, _) = jax.lax.scan(step, state, trainer.batches(spec, state, x.shape[0]))
        return state, (loss.mean(), trainer.evaluate(spec, state.params, hp, xv, yv)["accuracy"])

    return jax.lax.scan(epoch, state, None, length=EPOCHS)[1]


t0 = time.perf_counter()
compiled = jax.jit(jax.vmap(train)).lower(hp).compile()
t1 = time.perf_counter()
loss, acc = jax.block_until_ready(compiled(hp))
t2 = time.perf_counter()
print(f"bare compile_s={t1 - t0:.3f} run_s={t2 - t1:.3f} best_val_acc={float(acc.max()):.4f}")
