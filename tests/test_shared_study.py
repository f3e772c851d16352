"""Values from a shared study are data, never code (issue 26): parameters read back from the
study (a trial enqueued by a user or a tool, another worker's trial run again) are checked
against this sweep's own space before use; anything outside it is refused with a warning."""

import logging

import optuna
from omegaconf import OmegaConf

from helpers import multirun
from hpjax.cli import sweep_argv

SPACE = ["optimizer.lr=tag(log, interval(1e-3, 1e-1))", "activation=choice(relu, tanh)"]


def test_enqueued_values_outside_the_space_are_refused_and_never_applied(tmp_path, caplog):
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="hpjax", direction="maximize")
    study._storage.set_study_system_attr(study._study_id, "hpjax:workers", 1)
    study.enqueue_trial({"optimizer.lr": 0.05, "activation": "relu; touch pwned",
                         "model._target_": "os.system"})
    study.enqueue_trial({"optimizer.lr": 50.0, "activation": "tanh"})
    with caplog.at_level(logging.WARNING):
        multirun(sweep_argv(["-m", "hydra/sweeper=hpjax", "data=iris", "model.width=8",
                             "train.epochs=1", "hydra.sweeper.n_trials=2",
                             "hydra.sweeper.batch_size=2", *SPACE])[1:], sweep_dir)
    trials = optuna.load_study(study_name="hpjax", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params["optimizer.lr"] == 0.05  # its value inside the space is kept
    assert trials[0].params["activation"] in ("relu", "tanh")
    assert trials[1].params["activation"] == "tanh"
    assert 1e-3 <= trials[1].params["optimizer.lr"] <= 1e-1  # 50.0 refused: drawn instead
    for t in trials:
        ran = OmegaConf.load(sweep_dir / str(t.number) / ".hydra" / "overrides.yaml")
        assert not any("_target_" in o or "pwned" in o or o == "optimizer.lr=50.0"
                       for o in ran), ran
    assert not (tmp_path / "pwned").exists()
    warnings = [r.getMessage() for r in caplog.records if "refused the enqueued" in
                r.getMessage()]
    assert warnings == [
        "trial 0: refused the enqueued activation='relu; touch pwned', model._target_="
        "'os.system', outside this sweep's space (its other values are kept); never applied",
        "trial 1: refused the enqueued optimizer.lr=50.0, outside this sweep's space (its "
        "other values are kept); never applied"]
