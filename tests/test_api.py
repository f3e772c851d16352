"""The Python API: the README's example runs as written, and `load` gives back the model that
`result.json` reports."""

import json
import re
from pathlib import Path

import pytest

import hpjax

README = Path(__file__).resolve().parent.parent / "README.md"


def api_example() -> str:
    text = README.read_text()
    at = text.index("<!-- api-example")
    return re.search(r"```python\n(.*?)```", text[at:], re.S).group(1)


# The example's random search over model.width=choice(64, 128, 256) gives its 4 trials two widths
# at the preset's seed 0: two populations, each program built twice over. At seed 79 all four
# have model.width=128, the width of the example's `hpjax.train`, and in populations of one
# (batch_size=1) they run that run's programs: the sweep builds none. The test adds these
# overrides to the example's own.
SHARED_PROGRAMS = ["hydra.sweeper.seed=79", "hydra.sweeper.batch_size=1"]


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_sweep = hpjax.sweep
    monkeypatch.setattr(hpjax, "sweep", lambda overrides, **kw: real_sweep(
        [*overrides, *SHARED_PROGRAMS], **kw))
    scope: dict = {}
    exec(compile(api_example(), "README.md", "exec"), scope)
    result, model, sweep = scope["result"], scope["model"], scope["sweep"]
    # load reproduces result.json's test metrics (asserted in the example) from params.msgpack
    assert model.evaluate() == result.test and result.test["test/accuracy"] > 0.8
    assert (tmp_path / "outputs/iris/params.msgpack").is_file()
    assert not (tmp_path / "outputs/iris/params").exists()
    assert list(model.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])) == [0, 2]
    assert sorted(p.name for p in (tmp_path / "outputs/iris/.hydra").iterdir()) == [
        "config.yaml", "hydra.yaml", "overrides.yaml"]
    assert len(sweep.table) == 4 and len(sweep.study.trials) == 4
    assert {t.params["model.width"] for t in sweep.study.trials} == {"128"}  # (SHARED_PROGRAMS)
    assert sweep.best.objective == max(t.value for t in sweep.study.trials)
    # keep_params=1: the best trial's parameters only
    assert [p.parent.name for p in sweep.dir.glob("*/params.msgpack")] == [sweep.best_dir.name]
    # Flax alone reads the parameters, by the model's own names
    from flax.serialization import msgpack_restore

    saved = msgpack_restore((tmp_path / "outputs/iris/params.msgpack").read_bytes())
    assert sorted(saved["params"]) == ["Dense_0", "Dense_1", "Dense_2"]
    assert saved["params"]["Dense_0"]["kernel"].shape == (4, 128)
    assert result.num_params == sum(a.size for layer in saved["params"].values()
                                    for a in layer.values())
    # without a directory nothing is written; save_params=none keeps none (the same program)
    overrides = ["data=iris", "optimizer.lr=0.01", "train.epochs=10"]
    assert hpjax.train(overrides).test == result.test
    none = hpjax.train([*overrides, "train.save_params=none"], output_dir="none")
    assert none.test == result.test and not (tmp_path / "none/params.msgpack").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none", "outputs"]
    with pytest.raises(FileNotFoundError, match="no saved parameters"):
        hpjax.load(tmp_path / "none")
    best = hpjax.load(sweep.best_dir)
    # trained in a population (here of one): float rounding apart from a single evaluation at most
    assert best.evaluate()["test/accuracy"] == pytest.approx(
        sweep.best.test["test/accuracy"], abs=1 / 23)
    assert best.evaluate()["test/loss"] == pytest.approx(sweep.best.test["test/loss"], rel=1e-4)


def test_a_64_member_populations_params_are_its_best_and_load_predicts_as_it_did(
        tmp_path, monkeypatch):
    """Each job of a 64-member population keeps exactly its member's best-epoch variables in
    `params.msgpack`; `hpjax.load` gives the model that predicts what the population predicted;
    a job of an earlier version (an Orbax `params/` folder) still loads."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    from flax.serialization import msgpack_restore

    from helpers import multirun
    from hpjax.engine import loop

    seen = {}
    save = loop._Run.save_params

    def watch(run, slots):  # the population's best variables and test logits as it ends
        i = run.inputs
        seen["best"] = jax.device_get(run.best_params)
        best = run.best_params
        seen["logits"] = np.asarray(run.pop.predict(best, best, np.ones(i.size, bool), i.hp,
                                                    i.fold, run.place.shared(run.ds.x_test)))
        seen["paths"] = [run.members[run.slots[s]].params_path for s in slots]
        save(run, slots)

    monkeypatch.setattr(loop._Run, "save_params", watch)
    sweep = tmp_path / "sweep"
    multirun(["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
              "hydra.sweeper.n_trials=64", "hydra.sweeper.batch_size=64",
              "optimizer.lr=tag(log, interval(1e-3, 1.0))", "model.dropout=interval(0, 0.5)",
              "activation=relu", "data=iris", "train.epochs=3", "model.width=16",
              "train.early_stopping.patience=null"], sweep)
    assert seen["paths"] == [str(sweep / str(k) / "params.msgpack") for k in range(64)]
    for k in range(64):
        saved = msgpack_restore((sweep / str(k) / "params.msgpack").read_bytes())
        want = jax.tree.map(lambda a, k=k: a[k], seen["best"])
        assert jax.tree.structure(saved) == jax.tree.structure(want)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype
                   for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(want), strict=True))
    assert not list(sweep.glob("*/params.msgpack.tmp")) and not list(sweep.glob("*/params"))
    best_epochs = {json.loads((sweep / str(k) / "result.json").read_text())["best_epoch"]
                   for k in range(64)}
    assert len(best_epochs) > 1 and 3 in best_epochs  # not every member's best is its last
    model = hpjax.load(sweep / "63")
    logits = np.asarray(model.apply(model.data.x_test))
    # one member alone against the 64-member program: float rounding apart
    np.testing.assert_allclose(logits, seen["logits"][63], rtol=1e-5, atol=1e-5)
    assert list(np.argmax(logits, -1)) == list(np.argmax(seen["logits"][63], -1))
    # an earlier version's job: its variables as an Orbax checkpoint in params/
    job = sweep / "5"
    variables = msgpack_restore((job / "params.msgpack").read_bytes())
    ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(
        (job / "params").resolve(), args=ocp.args.PyTreeSave(variables))
    (job / "params.msgpack").unlink()
    old = hpjax.load(job)
    assert jax.tree.structure(old.variables) == jax.tree.structure(variables)
    assert all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(old.variables), jax.tree.leaves(variables), strict=True))


def test_a_session_gives_back_the_callers_logging_and_leaves_a_new_librarys_level(tmp_path):
    """A logger made during a run (a library imported by it, as SQLAlchemy is by the study)
    keeps the level the library gave it: reset to NOTSET, every SQL statement of the next
    sweep in the session reached the root's handlers. The caller's loggers come back as
    they were, and the job's log files are closed."""
    import logging

    from hpjax.api import _own_logging

    mine = logging.getLogger("hpjax-test-caller")
    mine.setLevel(logging.ERROR)
    with _own_logging():
        mine.setLevel(logging.DEBUG)
        library = logging.getLogger("hpjax-test-library-imported-in-the-run")
        library.setLevel(logging.WARNING)
        stream = logging.StreamHandler()
        library.addHandler(stream)
        log_file = logging.FileHandler(tmp_path / "app.log")
        library.addHandler(log_file)
    assert mine.level == logging.ERROR
    assert library.level == logging.WARNING and library.handlers == [stream]
    assert log_file.stream is None  # closed
