"""Your own Flax module and data function by `_target_` (the project in examples/own_model):
traced constructor arguments share one program, static ones split populations, bad input fails
before anything compiles."""

from pathlib import Path

import numpy as np
import pytest

from helpers import compose_config
from hpjax import data as data_lib
from hpjax.config import ConfigError
from hpjax.config.target import target_config
from hpjax.engine.batch import plan
from hpjax.engine.compile import CompileStats
from hpjax.engine.loop import train_population

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "own_model"


@pytest.fixture(autouse=True)
def _project_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))


def own(*overrides):
    """A config of the example project's ResMLP on its spirals, small and short."""
    return compose_config([f"hydra.searchpath=[file://{PROJECT}/conf]", "model=resmlp",
                           "data=spirals", "data.n_samples=300", "model.features=16",
                           "train.epochs=2", "train.early_stopping.patience=null", *overrides])


def test_traced_dropout_and_lr_compile_once_and_match_trial_by_trial():
    grid = [(d, lr) for d in (0.0, 0.4) for lr in (0.003, 0.03)]
    cfgs = [own(f"model.dropout={d}", f"optimizer.lr={lr}") for d, lr in grid]
    assert cfgs[0].model._traced_ == ("dropout",)
    together = train_population(cfgs, launcher="vmap")
    before = CompileStats.count
    again = train_population([own(f"model.dropout={d + 0.1}", f"optimizer.lr={lr * 2}")
                              for d, lr in grid], launcher="vmap")
    assert CompileStats.count == before  # new traced values: the same program
    assert all(o.result.status == "ok" for o in together + again)
    alone = [train_population([c])[0] for c in cfgs]
    for t, a in zip(together, alone, strict=True):
        for rt, ra in zip(t.rows, a.rows, strict=True):
            assert rt["val/loss"] == pytest.approx(ra["val/loss"], rel=1e-4)
            assert rt["train/loss"] == pytest.approx(ra["train/loss"], rel=1e-4)
    # the traced rate reaches the module: dropout changes the training loss, not the program
    assert together[0].rows[0]["train/loss"] != together[2].rows[0]["train/loss"]


def test_a_static_key_splits_the_population():
    cfgs = [own("model.features=8"), own("model.features=12"),
            own("model.features=8", "model.dropout=0.3"), own("model.batch_norm=true")]
    assert plan(cfgs, memory_budget_mb=None) == [[[0, 2]], [[1]], [[3]]]


def test_bad_model_configs_fail_with_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^model\._target_='mypkg\.models\.Nope': does not "
                       "import"):
        own("model._target_=mypkg.models.Nope")
    with pytest.raises(ConfigError, match=r"^model\._traced_='width': must name constructor "
                       "arguments set in the model config"):
        own("model._traced_=[dropout,width]")
    with pytest.raises(ConfigError, match=r"^model\.width=3: is not a constructor argument of "
                       r"mypkg\.models\.ResMLP \(its arguments: features, depth, num_classes"):
        own("+model.width=3")
    # traced, `depth` would steer range(): one line, before anything compiles
    before = CompileStats.count
    with pytest.raises(ConfigError, match=r"^model\._traced_='depth': mypkg\.models\.ResMLP "
                       "uses it in Python control flow .*leave it out of model._traced_ \\(a "
                       "dropout rate: use hpjax.nn.Dropout, hpjax.nn.nnx.Dropout or "
                       r"hpjax.nn.eqx.Dropout\)$"):
        train_population([own("model._traced_=[dropout,depth]")])
    with pytest.raises(ConfigError, match=r"returns outputs of shape \(64, 5\) for a batch of "
                       r"64; needs \(64, 3\)"):
        train_population([own("model.num_classes=5")])
    assert CompileStats.count == before


def wrong_lengths(n: int = 10):
    return np.zeros((n, 2)), np.zeros(n - 1)


def outside(n: int = 60):
    return np.random.default_rng(0).normal(size=(n, 2)), np.arange(n) % 4


@pytest.mark.parametrize("target,message", [
    ("wrong_lengths", r"^data\._target_='test_target\.wrong_lengths': must return features "
     r"x of shape \(samples, \.\.\.\) and labels y of shape \(samples,\); got x \(10, 2\), "
     r"y \(9,\)$"),
    ("outside", r"^data\.num_classes=3: labels must be integers in \[0, 3\); "
     "data._target_=test_target.outside returned 3$"),
    ("nowhere", r"^data\._target_='test_target\.nowhere': does not import"),
])
def test_bad_data_fails_with_one_line(target, message):
    with pytest.raises(ConfigError, match=message):
        data_lib.load(target_config("data", {"_target_": f"test_target.{target}",
                                             "num_classes": 3}))


def test_the_example_project_is_tuned_from_its_own_folder(tmp_path, monkeypatch):
    """CI runs examples/own_model as its README says: `hpjax --config-dir conf -m
    search=spirals` (its own TPE preset) from the project's folder (the command's entry point,
    in this process), then loads the best trial back in Python."""
    import csv
    import sys

    from helpers import run_main
    from hpjax.api import load

    # as in a fresh process: its package found from the working directory alone
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(PROJECT)])
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    sweep_dir = tmp_path / "sweep"
    proc = run_main(["--config-dir", "conf", "-m", "search=spirals", "hydra.sweeper.n_trials=4",
                     "train.epochs=2", "data.n_samples=300", "model.features=8",
                     "model.batch_norm=true", f"hydra.sweep.dir={sweep_dir}"], cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert "Launching 4 jobs as 1 population" in proc.stderr + proc.stdout
    best = next(r for r in rows if r["rank"] == "1")
    trained = load(sweep_dir / best["trial"])
    assert trained.config.model._target_ == "mypkg.models.ResMLP"
    # batch statistics are kept with the parameters (num_params counts only parameters)
    assert sorted(trained.variables) == ["batch_stats", "params"]
    assert int(best["num_params"]) == (2 * 8 + 8) + 2 * (8 * 8 + 8 + 2 * 8) + (8 * 3 + 3)
    assert trained.evaluate()["test/accuracy"] == pytest.approx(float(best["test/accuracy"]),
                                                                abs=1 / 45)


def test_hpjax_nn_dropout_takes_a_traced_rate_where_flax_refuses_it():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import hpjax.nn

    x = jnp.ones((4, 1000))

    def drop(rate, module=hpjax.nn.Dropout):
        return module(rate).apply({}, x, deterministic=False,
                                  rngs={"dropout": jax.random.key(0)})

    out = jax.jit(jax.vmap(drop))(jnp.array([0.0, 0.25, 0.5, 1.0]))
    zeros = np.asarray((out == 0).mean(axis=(1, 2)))
    np.testing.assert_allclose(zeros, [0, 0.25, 0.5, 1], atol=0.02)
    # kept units are scaled by 1 / (1 - rate): the mean is kept
    np.testing.assert_allclose(np.asarray(out.mean(axis=(1, 2)))[:3], 1, atol=0.05)
    assert np.array_equal(hpjax.nn.Dropout(0.5).apply({}, x, deterministic=True), x)
    with pytest.raises(jax.errors.TracerBoolConversionError):
        jax.jit(lambda r: drop(r, nn.Dropout))(0.5)
