"""The Python API: the README's example runs as written, and `load` gives back the model that
`result.json` reports."""

import re
from pathlib import Path

import pytest

import hpjax

README = Path(__file__).resolve().parent.parent / "README.md"


def api_example() -> str:
    text = README.read_text()
    at = text.index("<!-- api-example")
    return re.search(r"```python\n(.*?)```", text[at:], re.S).group(1)


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(api_example(), "README.md", "exec"), scope)
    result, model, sweep = scope["result"], scope["model"], scope["sweep"]
    # load reproduces result.json's test metrics (asserted in the example) from Orbax's files
    assert model.evaluate() == result.test and result.test["test/accuracy"] > 0.8
    assert (tmp_path / "outputs/iris/params/_CHECKPOINT_METADATA").exists()
    assert list(model.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])) == [0, 2]
    assert sorted(p.name for p in (tmp_path / "outputs/iris/.hydra").iterdir()) == [
        "config.yaml", "hydra.yaml", "overrides.yaml"]
    assert len(sweep.table) == 4 and len(sweep.study.trials) == 4
    assert sweep.best.objective == max(t.value for t in sweep.study.trials)
    # keep_params=1: the best trial's parameters only
    assert [p.parent.name for p in sweep.dir.glob("*/params")] == [sweep.best_dir.name]
    # Orbax alone reads the parameters, by the model's own names
    import orbax.checkpoint as ocp

    saved = ocp.StandardCheckpointer().restore(str(tmp_path / "outputs/iris/params"))
    assert sorted(saved["params"]) == ["Dense_0", "Dense_1", "Dense_2"]
    assert saved["params"]["Dense_0"]["kernel"].shape == (4, 128)
    assert result.num_params == sum(a.size for layer in saved["params"].values()
                                    for a in layer.values())
    # without a directory nothing is written; save_params=none keeps none (the same program)
    overrides = ["data=iris", "optimizer.lr=0.01", "train.epochs=10"]
    assert hpjax.train(overrides).test == result.test
    none = hpjax.train([*overrides, "train.save_params=none"], output_dir="none")
    assert none.test == result.test and not (tmp_path / "none/params").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none", "outputs"]
    with pytest.raises(FileNotFoundError, match="no saved parameters"):
        hpjax.load(tmp_path / "none")
    best = hpjax.load(sweep.best_dir)
    # trained in a population of 4: float rounding apart from a single evaluation at most
    assert best.evaluate()["test/accuracy"] == pytest.approx(
        sweep.best.test["test/accuracy"], abs=1 / 23)
    assert best.evaluate()["test/loss"] == pytest.approx(sweep.best.test["test/loss"], rel=1e-4)
