"""Training one configuration: accuracy reached, determinism, compile reuse, divergence, the
optimizer's numbers in its state."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import compose_config, rows_without_time
from hpjax import data as data_lib
from hpjax.cli import CONF_DIR
from hpjax.config import ACTIVATIONS
from hpjax.engine import jobs, population, trainer
from hpjax.engine.compile import CompileStats
from hpjax.engine.hparams import hparams

OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))

# The program family of most tests here (digits, one hidden layer of 32, batches of 32: 39 steps
# an epoch, 4 epochs, a constant learning rate): what they prove does not depend on the model's
# size, and `population.get` builds each of its signatures (one per optimizer) once per process,
# so the file runs on one worker.
pytestmark = pytest.mark.xdist_group("trainer")
SMALL = ["model.width=32", "model.num_layers=1", "train.batch_size=32", "train.epochs=4",
         "train.early_stopping.patience=null", "schedule=constant"]


def run(overrides=(), output_dir=None, base=SMALL):
    return jobs.run(compose_config(base + list(overrides)), output_dir)


def read_metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_default_config_reaches_95_percent_test_accuracy(tmp_path):
    result = jobs.run(compose_config(), str(tmp_path))
    assert result.status == "ok"
    assert result.test["test/accuracy"] >= 0.95
    assert result.objective == result.best["val/accuracy"] >= 0.95
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["test"]["test/accuracy"] == result.test["test/accuracy"]
    assert saved["num_params"] == 26_122  # 64*128+128 + 128*128+128 + 128*10+10
    rows = read_metrics(tmp_path)
    assert len(rows) == saved["epochs_run"] == result.epochs_run
    assert rows[saved["best_epoch"] - 1]["val/accuracy"] == saved["best"]["val/accuracy"]
    assert set(rows[0]) == {"epoch", "train/loss", "train/accuracy", "val/loss",
                            "val/accuracy", "lr", "epoch_time_s"}
    assert saved["compile_time_s"] > 0 and saved["train_time_s"] > 0
    assert saved["samples_per_s"] > 0


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_well_above_chance(name):
    result = run([f"optimizer={name}"])
    assert result.status == "ok"
    # chance is 0.1; at its default learning rate the slowest (lion) reaches 0.61-0.74 over
    # seeds 0-3 at this size
    assert result.best["val/accuracy"] > 0.5, result.best


def test_every_activation_trains_well_above_chance():
    accuracy = {name: run([f"activation={name}"]).best["val/accuracy"] for name in ACTIVATIONS}
    assert min(accuracy.values()) > 0.6, accuracy
    # the traced index really switches the function: the runs differ
    assert len(set(accuracy.values())) > 1


def test_same_seed_gives_identical_metrics_and_other_seeds_differ(tmp_path):
    paths = [tmp_path / name for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        path.mkdir()
        run([f"train.seed={seed}"], str(path))
    a, b, c = (rows_without_time(read_metrics(p)) for p in paths)
    assert a == b
    assert a != c and a[0]["train/loss"] != c[0]["train/loss"]


def test_new_numeric_values_compile_nothing():
    run(["optimizer.lr=1e-3", "model.dropout=0.1"])
    before = CompileStats.count
    result = run(["optimizer.lr=3e-3", "model.dropout=0.3", "activation=tanh",
                  "train.seed=7", "optimizer.b1=0.8", "train.label_smoothing=0.1"])
    assert CompileStats.count == before
    assert result.status == "ok"
    # a new static value builds its programs (2 epochs: XLA's code that of 4, loaded from the
    # run's compilation cache, which CompileStats counts as it counts a compile)
    run(["train.epochs=2"])
    assert CompileStats.count > before


def test_diverging_learning_rate_is_reported_not_raised(tmp_path):
    result = run(["optimizer=sgd", "optimizer.lr=1e6"], str(tmp_path))
    assert result.status == "diverged" and result.objective is None
    assert result.diverged_epoch == result.epochs_run == 1
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["status"] == "diverged" and saved["objective"] is None
    assert read_metrics(tmp_path)[-1]["train/loss"] is None  # NaN/inf written as null


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch():
    # min_delta=10: after epoch 1 nothing counts as an improvement of val/loss; 4 epochs at most
    result = run(["train.early_stopping.patience=2", "train.early_stopping.min_delta=10"])
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_test_metrics_come_from_the_best_epoch():
    # monitoring train/loss in max mode keeps epoch 1 as the best: its test metrics are reported
    # (a constant learning rate: epoch 1 of both runs trains alike)
    last = run(["train.early_stopping.monitor=train/loss", "train.early_stopping.mode=max"])
    first = run(["train.epochs=1"])
    assert last.best_epoch == 1 and last.epochs_run == 4
    assert last.test == pytest.approx(first.test, rel=1e-6)
    assert last.objective == pytest.approx(first.objective, rel=1e-6)


def test_logged_learning_rate_follows_the_schedule(tmp_path):
    # 39 steps per epoch; the boundary at 0.5 * 156 = step 78, the first of epoch 3; lr is logged
    # at each epoch's end
    run(["schedule=step", "schedule.boundaries=[0.5]", "schedule.gamma=0.1",
         "optimizer.lr=0.01"], str(tmp_path))
    lrs = [row["lr"] for row in read_metrics(tmp_path)]
    np.testing.assert_allclose(lrs, [0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_cnn_and_normalised_mlp_train(tmp_path):
    # A small CNN: convolutions are slow to run without XLA's optimizations (conftest).
    cnn = run(["model=cnn", "model.channels=[8,16]", "model.width=32", "optimizer.lr=1e-2",
               "train.epochs=2", "train.early_stopping.patience=null", "schedule=constant"],
              str(tmp_path), base=[])
    # chance is 0.1; 2 epochs reach 0.83-0.86 over seeds 0-2
    assert cnn.status == "ok" and cnn.best["val/accuracy"] > 0.7
    # conv 3*3*1*8+8, conv 3*3*8*16+16, pool 8->4->2, dense 2*2*16*32+32, head 32*10+10
    assert cnn.num_params == 80 + 1_168 + 2_080 + 330
    layer = run(["model.norm=layer", "model.width=[64,32]"])
    assert layer.status == "ok" and layer.best["val/accuracy"] > 0.6
    assert layer.num_params == (64 * 64 + 64 + 128) + (64 * 32 + 32 + 64) + (32 * 10 + 10)


@pytest.mark.parametrize("rate,dropped", [(0.0, 0.0), (0.1, 26 / 256), (0.25, 0.25), (0.5, 0.5),
                                          (0.9, 230 / 256)])
def test_dropout_drops_the_rounded_rate_and_keeps_the_mean(rate, dropped):
    import jax
    import jax.numpy as jnp

    from hpjax.nn import Dropout, dropout, noise_words

    def dropout_noise(key, shapes):
        return [jax.random.bits(key, (noise_words(s),), jnp.uint32) for s in shapes]

    x = jnp.ones((257, 129))  # not a multiple of 4 units: the last draw is cut
    (words,) = dropout_noise(jax.random.key(0), [x.shape])
    assert words.shape == (-(-257 * 129 // 4),)
    # hpjax.nn.Dropout (every model's) draws these words from its dropout key
    module = np.asarray(Dropout(rate).apply({}, x, deterministic=False,
                                            rng=jax.random.key(0)))
    np.testing.assert_array_equal(module, np.asarray(dropout(x, jnp.float32(rate), words)))
    out = np.asarray(jax.jit(dropout)(x, jnp.float32(rate), words))
    zero = (out == 0).mean()
    n = x.size
    # Unit i keeps when byte i of the words (in memory order) is below the rounded keep rate.
    byte = np.asarray(words).view(np.uint8)[:n].reshape(x.shape)
    np.testing.assert_array_equal(out != 0, byte < round((1 - rate) * 256))
    assert abs(zero - dropped) < 4 * np.sqrt(dropped * (1 - dropped) / n) + 1e-9  # 4 sigma
    assert np.allclose(out[out != 0], 1 / (1 - dropped))  # kept units scaled by 1/keep
    assert abs(out.mean() - 1) < 4 * np.sqrt(dropped / (1 - dropped) / n) + 1e-9
    (words,) = dropout_noise(jax.random.key(1), [x.shape])
    other = np.asarray(dropout(x, jnp.float32(rate), words))
    assert rate == 0 or not np.array_equal(out, other)  # a new key, a new mask


def test_optimizer_numbers_live_in_its_state_and_a_new_lr_compiles_nothing():
    """The logged learning rate is read from the optimizer state, and changing the state's
    numbers changes the next update through the same compiled step."""
    cfg = compose_config(SMALL + ["optimizer=sgd", "optimizer.lr=0.1"])
    ds = data_lib.load(cfg.data)
    pop = population.get(cfg, ds)
    hp = jax.tree.map(lambda v: jnp.asarray(v)[None], hparams(cfg))
    seeds, owner = jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32)
    state = pop.init(hp, seeds, owner)
    assert float(state.opt_state.hyperparams["lr"][0]) == pytest.approx(0.1)
    args = (jnp.ones(1, bool), jnp.zeros(1, jnp.int32), jnp.asarray(ds.x_train),
            jnp.asarray(ds.y_train), seeds, owner)
    copy = lambda s: jax.tree.map(jnp.copy, s)
    keep = jnp.zeros(1, bool)  # no best variables kept
    same, _, m = pop.epoch(copy(state), copy(state.params), keep, hp, *args)
    assert float(m["lr"][0]) == pytest.approx(0.1)
    halved = copy(state)
    halved = halved.replace(opt_state=halved.opt_state._replace(hyperparams={
        **halved.opt_state.hyperparams, "lr": halved.opt_state.hyperparams["lr"] / 2}))
    half_opt_state = jax.tree.map(lambda v: v[0], halved.opt_state)  # before it is donated
    before = CompileStats.count
    other, _, m2 = pop.epoch(halved, copy(halved.params), keep, hp, *args)
    assert CompileStats.count == before  # same program, new numbers from the state
    assert float(m2["lr"][0]) == pytest.approx(0.05)
    # One SGD step from the same parameters moves half as far at half the rate.
    step = jax.jit(lambda s: trainer.train_step(  # one program for both steps
        pop.spec, jax.tree.map(lambda v: v[0], hp), jnp.asarray(ds.x_train),
        jnp.asarray(ds.y_train), s, jnp.arange(32), trainer.noise(pop.spec, s.dropout_key, 0)))
    first = jax.tree.map(lambda v: v[0], state)
    full = step(first)[0].params
    half = step(first.replace(opt_state=half_opt_state))[0].params
    delta = lambda p: jax.tree.map(lambda a, b: a - b, p, first.params)
    for a, b in zip(jax.tree.leaves(delta(full)), jax.tree.leaves(delta(half)), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a) / 2, rtol=1e-4, atol=1e-7)
