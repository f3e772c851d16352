"""Populations: one program per signature, members that never touch each other, the same numbers
as each member trained alone."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import FAST, SMALL_MLP, compose_config, sgd_configs
from hpjax import data as data_lib
from hpjax.config import ACTIVATIONS
from hpjax.engine import population, trainer
from hpjax.engine.compile import CompileStats
from hpjax.engine.hparams import hparams
from hpjax.engine.loop import train_population

# One worker: the populations of 4 of two tests share their program.
pytestmark = pytest.mark.xdist_group("population")


def test_a_diverging_member_does_not_touch_the_others():
    with_nan = train_population(sgd_configs([0.1, 0.05, 1e6], SMALL_MLP), launcher="vmap")
    without = train_population(sgd_configs([0.1, 0.05, 0.02], SMALL_MLP), launcher="vmap")
    assert [o.result.status for o in with_nan] == ["ok", "ok", "diverged"]
    assert with_nan[2].result.diverged_epoch == 1 and len(with_nan[2].rows) == 1
    for i in (0, 1):  # same program (population padded to 4), so bit for bit equal
        assert with_nan[i].rows == [{**r, "epoch_time_s": a["epoch_time_s"]}
                                    for r, a in zip(without[i].rows, with_nan[i].rows,
                                                    strict=True)]
        assert with_nan[i].result.test == without[i].result.test


def test_mixed_activations_share_one_program_and_a_shared_one_is_fixed_in_it():
    # a population of 4: the program of test_a_diverging_member_does_not_touch_the_others
    mixed = sgd_configs([0.1, 0.1, 0.05, 0.05], SMALL_MLP)
    mixed[1] = compose_config(["optimizer=sgd", "optimizer.lr=0.1", "train.epochs=4",
                               "train.early_stopping.patience=null", "activation=tanh",
                               *SMALL_MLP])
    both = train_population(mixed, launcher="vmap")
    tanh_only = train_population([mixed[1]] * population.FIXED_ACTIVATION_FROM,
                                 launcher="vmap")
    fixed = [key[-1] for key in population._CACHE]
    assert None in fixed and ACTIVATIONS.index("tanh") in fixed
    # the traced switch and the fixed activation compute the same numbers
    assert both[1].rows[-1]["val/loss"] == pytest.approx(tanh_only[0].rows[-1]["val/loss"],
                                                         abs=1e-6)
    assert both[0].rows[-1]["val/loss"] != both[1].rows[-1]["val/loss"]


def test_new_numeric_values_with_the_same_signature_compile_nothing():
    # eval_batch_size=512: a signature of this test's own (the process may have compiled its
    # sizes of others), its XLA code that of the populations of 4 above (1024 and 512 both
    # evaluate digits' 270 samples in one batch): loaded from the run's compilation cache
    own = ["train.eval_batch_size=512", *SMALL_MLP]
    train_population(sgd_configs([0.1, 0.05, 0.02, 0.01], own), launcher="vmap")
    before = CompileStats.count
    two = sgd_configs([0.3, 0.2], [*own, "model.dropout=0.2", "train.seed=5", "activation=tanh"])
    # a launcher's 2 members pad to the 4 compiled (a sweep's smaller last batch): nothing
    # compiles, and the padding members' results are dropped
    padded = train_population(two, launcher="vmap", pad_to_compiled=True)
    assert CompileStats.count == before
    # otherwise 2 members pad to 2: one new program; the same numbers (1e-5)
    outcomes = train_population(two, launcher="vmap")
    first = CompileStats.count
    assert first > before
    for a, b in zip(padded, outcomes, strict=True):
        assert len(a.rows) == len(b.rows) == 4
        for ra, rb in zip(a.rows, b.rows, strict=True):
            for k in ("train/loss", "val/loss", "val/accuracy"):
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
        assert a.result.test == pytest.approx(b.result.test, rel=1e-5, abs=1e-6)
    # a second batch of 2 then compiles nothing (its own size preferred to a padded one)
    train_population(sgd_configs([0.03, 0.04], [*own, "model.dropout=0.4", "activation=tanh"]),
                     launcher="vmap", pad_to_compiled=True)
    assert CompileStats.count == first
    assert all(o.result.status == "ok" for o in outcomes)


def test_a_population_splits_over_the_most_devices_that_take_equal_slices():
    assert [population.split_devices(size, devices) for size, devices in
            ((32, 12), (32, 2), (4, 16), (1, 2), (6, 4), (7, 2))] == [8, 2, 4, 1, 3, 1]


def _per_member_epoch(spec, hp, x, y, states):
    """The reference: every member draws its own dropout noise, as if trained alone."""
    def one(hp, state):
        def step(s, idx):
            return trainer.train_step(spec, hp, x, y, s, idx,
                                      trainer.noise(spec, s.dropout_key, s.step))

        state, (loss, acc) = jax.lax.scan(step, state, trainer.batches(spec, state, x.shape[0]))
        return state, trainer.epoch_metrics(spec, state, loss, acc)

    return jax.vmap(one)(hp, states)


def test_population_draws_init_and_dropout_noise_once_per_seed_with_the_same_numbers():
    seeds, owner = population.distinct_seeds([0, 1, 0, 1, 7])
    assert seeds.tolist() == [0, 1, 7, 7] and owner.tolist() == [0, 1, 0, 1, 2]
    cfgs = [compose_config([*FAST, *SMALL_MLP, f"train.seed={s}", f"model.dropout={d}"])
            for s, d in ((0, 0.1), (1, 0.3), (0, 0.5), (1, 0.2))]
    ds = data_lib.load(cfgs[0].data)
    pop = population.build(cfgs[0], ds)
    spec = pop.spec
    hp = jax.tree.map(lambda *xs: jnp.stack(xs), *[hparams(c) for c in cfgs])
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    seeds, owner = map(jnp.asarray, population.distinct_seeds([0, 1, 0, 1]))
    # Parameters drawn once per seed and shared, against each member drawing its own.
    shared = pop.init(hp, seeds, owner)
    per_member = jax.jit(jax.vmap(lambda h: trainer.init_state(
        spec, h, trainer.init_params(spec, h["train"]["seed"]))))(hp)
    reference = jax.jit(functools.partial(_per_member_epoch, spec))
    for epoch in range(3):
        # The same parameters, masks, batches and products: equal bit for bit.
        for a, b in zip(jax.tree.leaves(shared.params), jax.tree.leaves(per_member.params),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        if epoch == 2:
            break
        shared, _, m = pop.epoch(shared, population.copy(shared.params),
                                 jnp.zeros(4, bool), hp, jnp.ones(4, bool),
                                 jnp.zeros(4, jnp.int32), x, y, seeds, owner)
        per_member, m_ref = reference(hp, x, y, per_member)
        np.testing.assert_array_equal(m["train/loss"], m_ref["train/loss"])
    # Members of one seed share masks, not results: other dropout rates, other numbers.
    assert not np.allclose(m["train/loss"][0], m["train/loss"][2])
