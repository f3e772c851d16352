"""The optimizer and schedule schemas' Optax code: schedule values at chosen steps, every
optimizer on a parabola, all with traced numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import compose_config
from hpjax.cli import CONF_DIR
from hpjax.engine.hparams import hparams, static

OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))

STEPS_PER_EPOCH, TOTAL = 10, 100


def schedule_values(overrides, steps):
    cfg = compose_config(["optimizer.lr=1.0"] + overrides)

    @jax.jit
    def values(hp):
        s = static(cfg).schedule.schedule(hp["optimizer"]["lr"], hp.get("schedule", {}),
                                          steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL)
        return jnp.stack([s(t) for t in steps])

    return np.asarray(values(hparams(cfg)))


@pytest.mark.parametrize("overrides,steps,expected", [
    (["schedule=constant"], [0, 50, 99], [1, 1, 1]),
    (["schedule=step", "schedule.boundaries=[0.5,0.8]", "schedule.gamma=0.1"],
     [0, 49, 50, 79, 80, 99], [1, 1, 0.1, 0.1, 0.01, 0.01]),
    (["schedule=exponential", "schedule.decay_rate=0.5"],
     [0, 10, 15, 20], [1, 0.5, 0.5**1.5, 0.25]),
    (["schedule=exponential", "schedule.decay_rate=0.5", "schedule.staircase=true"],
     [0, 10, 15, 20], [1, 0.5, 0.5, 0.25]),
    (["schedule=cosine", "schedule.end_ratio=0.1"], [0, 50, 100], [1, 0.55, 0.1]),
    (["schedule=warmup_cosine", "schedule.warmup_fraction=0.1", "schedule.init_ratio=0.1"],
     [0, 5, 10, 55, 100], [0.1, 0.55, 1, 0.5, 0]),
    (["schedule=onecycle", "schedule.pct_start=0.3", "schedule.div_factor=10",
      "schedule.final_div_factor=100"], [0, 30, 100], [0.1, 1, 0.001]),
])
def test_schedule_values(overrides, steps, expected):
    np.testing.assert_allclose(schedule_values(overrides, steps), expected, rtol=1e-5, atol=1e-7)


def test_schedule_follows_traced_lr():
    np.testing.assert_allclose(
        schedule_values(["schedule=cosine", "optimizer.lr=0.5"], [0, 50]), [0.5, 0.25], rtol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_descends_a_quadratic(name):
    """Each optimizer, built from traced values inside jit, reaches the minimum of a parabola."""
    lr = {"sgd": 0.1, "adagrad": 0.5}.get(name, 0.05)
    cfg = compose_config([f"optimizer={name}", f"optimizer.lr={lr}", "schedule=constant",
                          "optimizer.weight_decay=0"])
    target = jnp.array([[1.0, -2.0], [0.5, 3.0]])

    @jax.jit
    def fit(hp):
        n = hp["optimizer"]
        tx = static(cfg).optimizer.optimizer(optax.constant_schedule(n["lr"]), n)
        params = {"w": jnp.zeros((2, 2))}
        loss = lambda p: jnp.sum((p["w"] - target) ** 2)

        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=300)
        return loss(params)

    assert float(fit(hparams(cfg))) < 0.01 * float(jnp.sum(target**2))


def test_weight_decay_spares_biases_and_clipping_caps_the_update():
    cfg = compose_config(["optimizer=sgd", "optimizer.lr=1.0", "optimizer.weight_decay=0.5",
                          "optimizer.clip_norm=1.0"])
    n = hparams(cfg)["optimizer"]
    tx = static(cfg).optimizer.optimizer(optax.constant_schedule(n["lr"]), n)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.5)  # decay: -lr * wd * w
    np.testing.assert_allclose(updates["bias"], 0.0)
    big = {"kernel": jnp.full((2, 2), 100.0), "bias": jnp.zeros(2)}
    updates, _ = tx.update(big, tx.init(params), jax.tree.map(jnp.zeros_like, params))
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)
