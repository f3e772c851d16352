"""Models from the whole JAX ecosystem through the one adapter (`hpjax.engine.model`): Flax
NNX, Equinox and plain functions train as populations of traced numbers, as Linen does."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compose_config
from flax import nnx

import hpjax.nn
import hpjax.nn.eqx
import hpjax.nn.nnx
from hpjax.config import ConfigError
from hpjax.engine.compile import CompileStats
from hpjax.engine.loop import train_population

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROJECTS = {"nnx": (EXAMPLES / "nnx_model", "nnx_mlp", "nnx_digits"),
            "equinox": (EXAMPLES / "equinox_model", "eqx_mlp", "eqx_digits")}
# each kind's tests on one pytest worker, where its programs compile once (test_model_sweeps.py's
# too)
BY_KIND = [pytest.param(kind, marks=pytest.mark.xdist_group(f"models_{kind}"))
           for kind in ("nnx", "equinox")]
SMALL = ["data=digits", "train.epochs=2", "train.early_stopping.patience=null",
         "optimizer.lr=0.01"]


@pytest.fixture(autouse=True)
def _projects_on_path(monkeypatch):
    for folder, _, _ in PROJECTS.values():
        monkeypatch.syspath_prepend(str(folder))


def example(kind, *overrides):
    """A config of an example project's MLP on digits, 16 wide, 2 epochs."""
    folder, model, _ = PROJECTS[kind]
    return compose_config([f"hydra.searchpath=[file://{folder}/conf]", f"model={model}",
                           "model.features=16", *SMALL, *overrides])


def own(tmp_path, node, *overrides):
    """A config whose model is `node` (a `_target_` node's lines) in a conf folder of its own."""
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "own.yaml").write_text(node)
    return compose_config([f"hydra.searchpath=[file://{tmp_path}]", "model=own", *SMALL,
                           *overrides])


def _rows_equal(a, b, rel=1e-5):
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
            assert ra[key] == pytest.approx(rb[key], rel=rel, abs=1e-6), key


@pytest.mark.parametrize("kind", BY_KIND)
def test_a_traced_sweep_compiles_once_and_each_trial_equals_itself_alone(kind):
    grid = [("0.0", "0.01"), ("0.3", "0.03")]
    cfgs = [example(kind, f"model.dropout={d}", f"optimizer.lr={lr}") for d, lr in grid]
    together = train_population(cfgs, launcher="vmap")
    before = CompileStats.count
    again = train_population([example(kind, "model.dropout=0.2", "optimizer.lr=0.02"),
                              example(kind, "model.dropout=0.1", "optimizer.lr=0.005")],
                             launcher="vmap")
    assert CompileStats.count == before  # new traced values: the same program
    assert all(o.result.status == "ok" for o in together + again)
    for cfg, t in zip(cfgs, together, strict=True):
        _rows_equal(t, train_population([cfg])[0])
    # the traced rate reaches the module: dropout changes the training loss
    assert together[0].rows[0]["train/loss"] != together[1].rows[0]["train/loss"]
    assert together[1].rows[-1]["val/accuracy"] > 0.5


class TwinMLP(nnx.Module):
    """hpjax's Linen MLP written in NNX, its parameters drawn as the Linen one draws them from
    the member's key (`rngs.params`' key is the key Linen's `init` gets)."""

    def __init__(self, in_features, widths, num_classes, dropout=0.0, activation=0,
                 negative_slope=0.01, *, rngs):
        from hpjax.nn.models import MLP

        key = rngs.params.key.get_value()
        linen = MLP(widths, num_classes).init({"params": key, "dropout": key},
                                              jnp.zeros((1, in_features)))["params"]
        sizes = [in_features, *widths, num_classes]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                for a, b in zip(sizes, sizes[1:], strict=False)])
        for i, layer in enumerate(self.layers):
            layer.kernel.set_value(linen[f"Dense_{i}"]["kernel"])
            layer.bias.set_value(linen[f"Dense_{i}"]["bias"])
        self.drop = hpjax.nn.nnx.Dropout(dropout, rngs=rngs)
        self.activation = nnx.Variable(activation)
        self.negative_slope = nnx.Variable(negative_slope)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = hpjax.nn.activation(layer(x), self.activation.get_value(),
                                    self.negative_slope.get_value())
            x = self.drop(x)
        return self.layers[-1](x)


def test_an_nnx_mlp_initialised_like_its_linen_twin_gives_the_same_metrics(tmp_path):
    twin = own(tmp_path, "_target_: test_models.TwinMLP\nin_features: 64\nwidths: [16, 16]\n"
               "num_classes: ${data.num_classes}\n")
    linen = compose_config(["model=mlp", "model.width=16", "model.num_layers=2",
                            "model.dropout=0.0", *SMALL])
    [a], [b] = train_population([twin]), train_population([linen])
    _rows_equal(a, b)
    assert a.rows[-1]["val/accuracy"] > 0.5


def make_mlp(features: int = 16, num_classes: int = 10, scale: float = 1.0):
    """Plain functions: `init(key, x) -> params`, `apply(params, x, *, train, key)`."""
    def init(key, x):
        k1, k2 = jax.random.split(key)
        d = int(np.prod(x.shape[1:]))
        return {"w1": jax.random.normal(k1, (d, features)) / np.sqrt(d),
                "b1": jnp.zeros((1, features)),
                "w2": jax.random.normal(k2, (features, num_classes)) / np.sqrt(features)}

    def apply(params, x, *, train, key):
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
        return scale * h @ params["w2"]

    return init, apply


def test_plain_functions_train_with_a_traced_number(tmp_path):
    node = "_target_: test_models.make_mlp\nnum_classes: ${data.num_classes}\nscale: 1.0\n" \
           "_traced_: [scale]\n"
    outcomes = train_population([own(tmp_path, node), own(tmp_path, node, "model.scale=0.5")],
                                launcher="vmap")
    assert [o.result.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[0].rows[-1]["val/accuracy"] > 0.5
    assert outcomes[0].rows[0]["train/loss"] != outcomes[1].rows[0]["train/loss"]
    # a job's params.msgpack back: `.module` is `apply` with the trained parameters bound
    import hpjax

    result = hpjax.train([f"hydra.searchpath=[file://{tmp_path}]", "model=own", *SMALL,
                          "model.scale=0.5"], str(tmp_path / "job"))
    trained = hpjax.load(tmp_path / "job")
    assert sorted(trained.params) == ["b1", "w1", "w2"]
    x = trained.data.x_test
    np.testing.assert_allclose(trained.module(x), trained.apply(x), rtol=1e-6)
    assert trained.evaluate()["test/accuracy"] == pytest.approx(
        result.test["test/accuracy"], abs=1e-6)
    # one seed, one fold: member 1 is no member (its variables would be member 0's)
    with pytest.raises(ValueError) as info:
        hpjax.load(tmp_path / "job", member=1)
    assert str(info.value) == f"hpjax.load(member=1): {tmp_path / 'job'} is a trial of 1 " \
        "member (train.repeats=1 x data.cv_folds=1); pass member=0"


class NotAModel:
    def __init__(self, width):
        self.width = width


class LazyNNX(nnx.Module):
    def __init__(self, num_classes, *, rngs):
        self.num_classes, self.rngs = num_classes, rngs

    def __call__(self, x):
        if not hasattr(self, "out"):
            self.out = nnx.Linear(x.shape[-1], self.num_classes, rngs=self.rngs)
        return self.out(x)


ARGS = "in_features, features, depth, num_classes, dropout, batch_norm, activation"
FIX = "remove it from the model config, or add it to the constructor"
TRACED = ("model._traced_='depth': {} uses it in Python control flow (if, range, a shape), "
          "which a traced value cannot steer: leave it out of model._traced_ (a dropout rate: "
          "use hpjax.nn.Dropout, hpjax.nn.nnx.Dropout or hpjax.nn.eqx.Dropout)")
SHAPE = ("model._target_='{}': returns outputs of shape (64, 5) for a batch of 64; needs "
         "(64, 10), one logit per class: set its output size, e.g. num_classes: "
         "${{data.num_classes}}")


@pytest.mark.parametrize("kind,node,overrides,message", [
    ("own", "_target_: test_models.NotAModel\nwidth: 3\n", [],
     "model._target_='test_models.NotAModel': must name a flax.linen.Module, flax.nnx.Module "
     "or equinox.Module class, or a function returning (init, apply)"),
    ("nnx", None, ["+model.width=3"], "model.width=3: is not a constructor argument of "
     f"nnxpkg.models.MLP (its arguments: {ARGS}): {FIX}"),
    ("equinox", None, ["+model.rngs=3"], "model.rngs=3: is not a constructor argument of "
     f"eqxpkg.models.MLP (its arguments: {ARGS}): {FIX}"),
], ids=["no_kind", "nnx_argument", "equinox_argument"])
def test_bad_model_configs_fail_with_one_line(tmp_path, kind, node, overrides, message):
    with pytest.raises(ConfigError) as info:
        own(tmp_path, node) if kind == "own" else example(kind, *overrides)
    assert str(info.value) == message


@pytest.mark.parametrize("make,message", [
    (lambda p: example("nnx", "model._traced_=[dropout,depth]"),
     TRACED.format("nnxpkg.models.MLP")),
    (lambda p: example("equinox", "model._traced_=[dropout,depth]"),
     TRACED.format("eqxpkg.models.MLP")),
    (lambda p: own(p, "_target_: test_models.LazyNNX\nnum_classes: 10\n"),
     "model._target_='test_models.LazyNNX': creates variables in __call__ (out.bias, "
     "out.kernel); an NNX module makes them in __init__: pass the input size as a constructor "
     "argument"),
    (lambda p: example("nnx", "model.num_classes=5"), SHAPE.format("nnxpkg.models.MLP")),
    (lambda p: example("equinox", "model.num_classes=5"), SHAPE.format("eqxpkg.models.MLP")),
    (lambda p: own(p, "_target_: test_models.make_mlp\nnum_classes: 5\n"),
     SHAPE.format("test_models.make_mlp")),
], ids=["nnx_traced_control_flow", "equinox_traced_control_flow", "nnx_lazy_variables",
        "nnx_shape", "equinox_shape", "functions_shape"])
def test_model_mistakes_stop_before_anything_compiles(tmp_path, make, message):
    cfg = make(tmp_path)
    before = CompileStats.count
    with pytest.raises(ConfigError) as info:
        train_population([cfg])
    assert str(info.value) == message  # one line: the key, the value, the fix
    assert CompileStats.count == before


def test_the_traced_dropouts_take_a_traced_rate_where_nnx_refuses_it():
    x = jnp.ones((4, 1000))
    rates = jnp.array([0.0, 0.25, 0.5, 1.0])

    def nnx_drop(rate):
        return hpjax.nn.nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0))(x)

    def eqx_drop(rate):
        return hpjax.nn.eqx.Dropout(rate)(x, key=jax.random.key(0))

    for drop in (nnx_drop, eqx_drop):
        out = jax.jit(jax.vmap(drop))(rates)
        np.testing.assert_allclose(np.asarray((out == 0).mean(axis=(1, 2))), [0, 0.25, 0.5, 1],
                                   atol=0.02)
        np.testing.assert_allclose(np.asarray(out.mean(axis=(1, 2)))[:3], 1, atol=0.05)
    assert np.array_equal(hpjax.nn.nnx.Dropout(0.5, deterministic=True)(x), x)
    assert np.array_equal(eqx.nn.inference_mode(hpjax.nn.eqx.Dropout(0.5))(x), x)
    with pytest.raises(jax.errors.TracerBoolConversionError):
        jax.jit(lambda r: nnx.Dropout(r, rngs=nnx.Rngs(dropout=0))(x))(0.5)


@pytest.mark.parametrize("kind", BY_KIND)
def test_the_example_project_is_tuned_from_its_own_folder(kind, tmp_path, monkeypatch):
    """examples/<kind>_model as its docs say: `hpjax --config-dir conf -m search=<preset>`
    from the project's folder (here in this process), then the best trial back in Python: the
    user's own object (`.module`) with the trained state, and `.predict`."""
    import hpjax

    folder, _, preset = PROJECTS[kind]
    monkeypatch.chdir(folder)
    sweep = hpjax.sweep([f"hydra.searchpath=[file://{folder}/conf]", f"search={preset}",
                         "hydra.sweeper.n_trials=4", "train.epochs=2", "model.features=8",
                         "model.batch_norm=true"], str(tmp_path / "sweep"))
    assert len(sweep.table) == 4 and all(r["status"] == "ok" for r in sweep.table)
    trained = hpjax.load(sweep.best_dir)
    # batch statistics are kept with the parameters; the traced dropout rate is not saved
    assert sorted(trained.variables) == ["params", "state"]
    assert not any("drop" in k for k in trained.variables["params"])
    x, y = trained.data.x_test, trained.data.y_test
    if kind == "nnx":
        assert isinstance(trained.module, nnx.Module)
        out = trained.module(x)
        mean = trained.module.norms[0].mean.get_value()
    else:
        model, state = trained.module
        out = jax.vmap(lambda xi: model(xi, state)[0])(x)
        mean = state.get(model.norms[0].batch_state_index)[0]
    assert float(jnp.abs(mean).sum()) > 0  # trained running statistics came back
    np.testing.assert_allclose(out, trained.apply(x), rtol=1e-5, atol=1e-5)
    assert float(np.mean(np.argmax(out, -1) == y)) == pytest.approx(
        trained.evaluate()["test/accuracy"], abs=1e-6)
    raw = x.reshape(len(x), -1) * trained.data.std + trained.data.mean  # as the data gave them
    np.testing.assert_array_equal(trained.predict(raw), trained.data.classes[np.argmax(out, -1)])


@pytest.mark.xdist_group("models_nnx")
def test_pbt_copies_an_nnx_members_whole_state():
    """PBT over the NNX example with batch norm: an exploit copies the donor's `nnx.Param`s
    and its `nnx.BatchStat`s exactly, and the explored learning rate is in the optimizer's
    state (the programs of the example's sweep above: 2 epochs, a population of 4)."""
    from test_pbt import Watched, watched_exploits

    from hpjax.engine.jobs import train_trials
    from hpjax.engine.schedulers import pbt as pbt_lib

    cfgs = [example("nnx", "model.batch_norm=true", "model.features=8", f"optimizer.lr={lr}")
            for lr in (0.03, 0.01, 0.003, 0.001)]
    watched = Watched({"optimizer.lr": pbt_lib.Bounds(1e-4, 1.0, log=True),
                       "model.dropout": pbt_lib.Bounds(0.0, 0.5)}, interval=1, fraction=0.25,
                      resample_probability=0.25, seed=0)
    watched.explored = []
    with watched_exploits() as seen:
        outcomes = train_trials(cfgs, scheduler=watched)
    assert [c[0] for c in watched.copies] == [1]  # every epoch but the last
    assert len(seen) == 1 and all(o.result.status == "ok" for o in outcomes)
    for donor, recipient, lr, cfg_lr in seen:
        assert sorted(donor) == ["params", "state"]
        assert sorted(donor["state"]) == ["norms.0.mean", "norms.0.var", "norms.1.mean",
                                          "norms.1.var"]
        for a, b in zip(jax.tree.leaves(donor), jax.tree.leaves(recipient), strict=True):
            np.testing.assert_array_equal(a, b)
        assert lr == pytest.approx(cfg_lr, rel=1e-6)


@pytest.mark.xdist_group("models_equinox")
def test_pbt_copies_an_equinox_members_whole_state_and_a_killed_run_resumes(tmp_path):
    """PBT over the Equinox example with batch norm: an exploit copies the donor's parameters
    and its `eqx.nn.State` exactly; killed during epoch 2 with `train.checkpoint_every=1` and
    run again on its job directories, it trains epoch 2 only and ends as the uninterrupted run
    (the programs of the example's sweep above: 2 epochs, a population of 4)."""
    from test_pbt import Watched, watched_exploits

    from hpjax.engine.jobs import train_trials
    from hpjax.engine.schedulers import pbt as pbt_lib

    def cfgs(*extra):
        return [example("equinox", "model.batch_norm=true", "model.features=8",
                         f"optimizer.lr={lr}", *extra)
                for lr in (0.03, 0.01, 0.003, 0.001)]

    def explorer(kind=pbt_lib.PBT):
        return kind({"optimizer.lr": pbt_lib.Bounds(1e-4, 1.0, log=True),
                     "model.dropout": pbt_lib.Bounds(0.0, 0.5)}, interval=1, fraction=0.25,
                    resample_probability=0.25, seed=0)

    watched = explorer(Watched)
    watched.explored = []
    with watched_exploits() as seen:
        outcomes = train_trials(cfgs(), scheduler=watched)
    assert [c[0] for c in watched.copies] == [1]
    for donor, recipient, _, _ in seen:
        assert sorted(donor) == ["params", "state"] and donor["state"]
        for a, b in zip(jax.tree.leaves(donor), jax.tree.leaves(recipient), strict=True):
            np.testing.assert_array_equal(a, b)

    class Killed(Exception):
        pass

    def killed_in_2(report):
        if report.epoch == 2:
            raise Killed

    dirs = [str(tmp_path / str(i)) for i in range(4)]
    with pytest.raises(Killed):
        train_trials(cfgs("train.checkpoint_every=1"), scheduler=explorer(), output_dirs=dirs,
                     on_progress=killed_in_2)
    epochs, again = [], explorer()
    resumed = train_trials(cfgs("train.checkpoint_every=1"), scheduler=again, output_dirs=dirs,
                           on_progress=lambda r: epochs.append(r.epoch))
    assert epochs == [2] and again.copies == watched.copies
    for r, o in zip(resumed, outcomes, strict=True):
        assert r.result.resumed_from_epoch == 1 and r.result.pbt == o.result.pbt
        assert [row["val/loss"] for row in r.rows] == pytest.approx(
            [row["val/loss"] for row in o.rows], rel=1e-5)
