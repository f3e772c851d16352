"""Benchmark of one training run of the default configuration (digits, MLP 2x128, Adam, batch 64).

Prints compile time, steady-state steps/s and samples/s of hpjax's epoch (one jitted call that
scans over every batch), and the same epoch run as a naive loop that calls a jitted step per batch
from Python, as tutorials do: the ratio of the two epoch times, measured in this process.

    python scripts/bench_train.py [hydra overrides...]   e.g. model.width=512 train.batch_size=256

Run without overrides, it writes its table into docs/benchmarks.md (section bench_train).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from hydra import compose, initialize_config_dir

from hpjax import data as data_lib
from hpjax.cli import CONF_DIR, register
from hpjax.config import to_config
from hpjax.engine import trainer
from hpjax.engine.compile import CompileStats
from hpjax.engine.hparams import hparams, static
from hpjax.engine.model import build as build_model


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main(overrides):
    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides))
    ds = data_lib.load(cfg.data)
    spec = trainer.Spec(static(cfg), build_model(cfg.model, ds.num_classes), ds.input_shape,
                        ds.n_train)

    @jax.jit
    def init(hp):
        return trainer.init_state(spec, hp, trainer.init_params(spec, hp["train"]["seed"]))

    @jax.jit
    def train_epoch(state, hp, x, y):
        def step(s, idx):
            return trainer.train_step(spec, hp, x, y, s, idx,
                                      trainer.noise(spec, s.dropout_key, s.step))

        return jax.lax.scan(step, state, trainer.batches(spec, state, x.shape[0]))

    hp = hparams(cfg)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    steps, bs = spec.steps_per_epoch, cfg.train.batch_size

    CompileStats.install()
    c0 = CompileStats.seconds
    state = init(hp)
    jax.block_until_ready(train_epoch(state, hp, x, y))
    compile_s = CompileStats.seconds - c0
    epoch_s = best_of(lambda: train_epoch(state, hp, x, y), repeats=20)

    # The naive loop: host-side shuffle and slicing, one jitted step call per batch.
    step = jax.jit(lambda s, hp, xb, yb: trainer.train_step(
        spec, hp, xb, yb, s, jnp.arange(bs), trainer.noise(spec, s.dropout_key, s.step)))
    xh, yh = ds.x_train, ds.y_train
    rng = np.random.default_rng(0)

    def naive_epoch():
        s = state
        order = rng.permutation(len(xh))
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            s, _ = step(s, hp, xh[idx], yh[idx])
        return s

    jax.block_until_ready(naive_epoch())  # compile
    naive_s = best_of(naive_epoch, repeats=5)

    print(f"config: {' '.join(overrides) or '(default)'}  device: {jax.devices()[0]}")
    print(f"train split {len(xh)} samples, {steps} steps of {bs} per epoch")
    print(f"compile (init + train_epoch)  {compile_s:8.2f} s")
    print(f"hpjax epoch (lax.scan)        {epoch_s * 1e3:8.2f} ms  "
          f"{steps / epoch_s:10.0f} steps/s  {steps * bs / epoch_s:10.0f} samples/s")
    print(f"naive loop (jit step/batch)   {naive_s * 1e3:8.2f} ms  "
          f"{steps / naive_s:10.0f} steps/s  {steps * bs / naive_s:10.0f} samples/s")
    print(f"naive / hpjax epoch time      {naive_s / epoch_s:8.2f}x")
    if not overrides:  # the documented figures are the default configuration's
        from _benchdoc import write_section

        write_section("bench_train", "Training one trial (`scripts/bench_train.py`)",
                      "python scripts/bench_train.py", f"""
One trial of the default configuration (digits, MLP 2x128, Adam, batch 64: {len(xh)} training
samples, {steps} steps of {bs} per epoch): the compile time, hpjax's epoch (one jitted
`lax.scan` over every batch, the best of 20 calls) and the same epoch as a naive loop that calls
a jitted step per batch from Python (the best of 5), in the same process.

| | time | steps/s | samples/s |
|---|---|---|---|
| compile (init + train_epoch) | {compile_s:.2f} s | | |
| hpjax epoch (`lax.scan`) | {epoch_s * 1e3:.2f} ms | {steps / epoch_s:,.0f} | \
{steps * bs / epoch_s:,.0f} |
| naive loop (jitted step per batch) | {naive_s * 1e3:.2f} ms | {steps / naive_s:,.0f} | \
{steps * bs / naive_s:,.0f} |

The naive loop takes {naive_s / epoch_s:.2f}x hpjax's epoch time.
""")


if __name__ == "__main__":
    main(sys.argv[1:])
