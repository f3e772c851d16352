"""Benchmark of one MLP written in each kind of model hpjax trains: Flax Linen (hpjax's own
`mlp`), Flax NNX, Equinox and plain `init`/`apply` functions.

Prints, for a population of 32 members (digits, MLP 64-128-128-10, dropout 0.1 traced, a
learning rate per member, Adam, batch 64), the compile time, the work XLA counts in the
compiled epoch and the epoch time of each kind (the best of 60 epochs, the kinds taking turns),
and each epoch time as a ratio of Linen's, measured in this process. The goal is each kind
within 1.1x of Linen: the adapter's work (building the module in the trace, moving arrays by
name) must cost nothing once compiled.

    python scripts/bench_models.py          # writes its section of docs/benchmarks.md
"""

import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import hpjax.nn
import hpjax.nn.eqx
import hpjax.nn.nnx

MEMBERS, WIDTH, EPOCHS = 32, 128, 60


class NNXMLP(nnx.Module):
    def __init__(self, in_features, width, num_classes, dropout=0.0, activation=0, *, rngs):
        self.l1 = nnx.Linear(in_features, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, num_classes, rngs=rngs)
        self.drop = hpjax.nn.nnx.Dropout(dropout, rngs=rngs)
        self.activation = nnx.Variable(activation)

    def __call__(self, x):
        act = self.activation.get_value()
        x = x.reshape(x.shape[0], -1)
        x = self.drop(hpjax.nn.activation(self.l1(x), act))
        x = self.drop(hpjax.nn.activation(self.l2(x), act))
        return self.out(x)


class EqxMLP(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    out: eqx.nn.Linear
    drop: hpjax.nn.eqx.Dropout
    activation: int | jax.Array

    def __init__(self, in_features, width, num_classes, dropout=0.0, activation=0, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.l1 = eqx.nn.Linear(in_features, width, key=k1)
        self.l2 = eqx.nn.Linear(width, width, key=k2)
        self.out = eqx.nn.Linear(width, num_classes, key=k3)
        self.drop = hpjax.nn.eqx.Dropout(dropout)
        self.activation = activation

    def __call__(self, x, *, key=None):
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        x = self.drop(hpjax.nn.activation(self.l1(x.reshape(-1)), self.activation), key=k1)
        x = self.drop(hpjax.nn.activation(self.l2(x), self.activation), key=k2)
        return self.out(x)


def functions_mlp(in_features, width, num_classes, dropout=0.0, activation=0):
    sizes = [in_features, width, width, num_classes]

    def init(key, x):
        keys = jax.random.split(key, 3)
        init_w = jax.nn.initializers.lecun_normal()
        return [{"w": init_w(k, (a, b)), "b": jnp.zeros((1, b))}
                for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]

    def apply(params, x, *, train, key):
        x = x.reshape(x.shape[0], -1)
        keys = [None, None] if key is None else jax.random.split(key)
        for layer, k in zip(params[:-1], keys, strict=True):
            x = hpjax.nn.activation(x @ layer["w"] + layer["b"], activation)
            if train:
                words = jax.random.bits(k, (hpjax.nn.noise_words(x.shape),), jnp.uint32)
                x = hpjax.nn.dropout(x, jnp.asarray(dropout, jnp.float32), words)
        return x @ params[-1]["w"] + params[-1]["b"]

    return init, apply


def node(target: str) -> dict:
    return {"_target_": f"bench_models.{target}", "in_features": 64, "width": WIDTH,
            "num_classes": 10, "dropout": 0.1, "_traced_": ["dropout"]}


KINDS = {"Linen (hpjax's mlp)": None, "Flax NNX": node("NNXMLP"), "Equinox": node("EqxMLP"),
         "plain functions": node("functions_mlp")}


def configs(model: dict | None) -> list:
    from hpjax.api import compose

    base = ["data=digits", "train.batch_size=64", "optimizer=adam", f"model.width={WIDTH}",
            "model.num_layers=2", "model.dropout=0.1", "activation=relu"]
    cfg = compose(base)
    if model is not None:
        from hpjax.config.target import target_config

        cfg.model = target_config("model", model)
    cfgs = []
    for lr in np.geomspace(1e-4, 1e-1, MEMBERS):
        cfgs.append(copy.deepcopy(cfg))
        cfgs[-1].optimizer.lr = float(lr)
    return cfgs


def prepare(cfgs: list) -> tuple[float, tuple, Callable[[], float]]:
    """(compile seconds, (GFLOP, MiB accessed) of the compiled epoch by XLA's cost analysis, a
    function that trains one epoch of the population of `cfgs` and returns its seconds)."""
    from hpjax import data as data_lib
    from hpjax.engine import population
    from hpjax.engine.compile import CompileStats

    ds = data_lib.load(cfgs[0].data)
    pop = population.get(cfgs[0], ds, activation=0)
    place = population.Placement.of(len(cfgs))
    i = population.stack(cfgs, [0] * len(cfgs), place)
    x, y = place.shared(ds.x_train), place.shared(ds.y_train)
    active = place.per_member(np.ones(i.size, bool))
    c0 = CompileStats.seconds
    held = {"states": pop.init(i.hp, i.seeds, i.owner)}
    held["best"] = population.copy(held["states"].params)
    keep = place.per_member(np.zeros(i.size, bool))

    def epoch() -> float:
        t0 = time.perf_counter()
        held["states"], held["best"], m = pop.epoch(held["states"], held["best"], keep, i.hp,
                                                    active, i.fold, x, y, i.seeds, i.owner)
        jax.block_until_ready((held["states"], m))
        return time.perf_counter() - t0

    epoch()
    compile_s = CompileStats.seconds - c0
    cost = pop.epoch.lower(held["states"], held["best"], keep, i.hp, active, i.fold, x, y,
                           i.seeds, i.owner).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return compile_s, (cost.get("flops", float("nan")) / 1e9,
                       cost.get("bytes accessed", float("nan")) / 2**20), epoch


def main() -> None:
    from hpjax.engine.compile import CompileStats, use_cpu_cores

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    use_cpu_cores()
    CompileStats.install()
    prepared = {name: prepare(configs(model)) for name, model in KINDS.items()}
    # Epochs of the four kinds take turns, in a rotating order, so that a change in the
    # machine's load (it is shared) falls on all of them alike; each kind's best is kept.
    best = dict.fromkeys(prepared, float("inf"))
    names = list(prepared)
    for r in range(EPOCHS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            best[name] = min(best[name], prepared[name][2]())
    linen = best["Linen (hpjax's mlp)"]
    lines = ["| model | compile s | epoch GFLOP, MiB accessed (XLA) | epoch ms | vs Linen |",
             "|---|---|---|---|---|"]
    for name, (compile_s, (gflop, mib), _) in prepared.items():
        epoch_s = best[name]
        print(f"{name:22s} compile {compile_s:6.2f} s   {gflop:7.3f} GFLOP {mib:7.1f} MiB   "
              f"epoch {epoch_s * 1e3:8.2f} ms   {epoch_s / linen:5.2f}x Linen")
        lines.append(f"| {name} | {compile_s:.2f} | {gflop:.3f}, {mib:.1f} | "
                     f"{epoch_s * 1e3:.2f} | {epoch_s / linen:.2f}x |")
    from _benchdoc import write_section

    write_section("bench_models", "One MLP in each kind of model (`scripts/bench_models.py`)",
                  "python scripts/bench_models.py", f"""
A population of {MEMBERS} members of one MLP (digits, 64-{WIDTH}-{WIDTH}-10, dropout 0.1
traced, relu, a learning rate per member, Adam, batch 64) written as hpjax's Linen `mlp`, a
Flax NNX module, an Equinox module and plain `init`/`apply` functions: the compile time of
init and epoch, the work XLA counts in the compiled epoch (floating-point operations and bytes
accessed: independent of the machine's load), and the best of {EPOCHS} epochs, the kinds taking
turns in a rotating order, in the same process. Goal: each kind within
1.1x of Linen's epoch time.

""" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
