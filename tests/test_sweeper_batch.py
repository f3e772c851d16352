"""The sweeper's batched study work (hydra_plugins/hpjax_sweeper/_batch.py): a batch's asks and
tells in one transaction, trials counted by the database."""

import logging

import optuna
import pytest
import sqlalchemy
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from hydra_plugins.hpjax_sweeper import _batch
from hydra_plugins.hpjax_sweeper._impl import HpjaxSweeperImpl

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
         "act": optuna.distributions.CategoricalDistribution(["relu", "tanh"])}


def make_study(tmp_path, name="s"):
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name,
                               direction="maximize", sampler=optuna.samplers.RandomSampler(0),
                               load_if_exists=True)


def commits(study):
    """A list that grows by one at each commit of the study's database."""
    seen = []
    sqlalchemy.event.listen(_batch.rdb(study).engine, "commit", lambda conn: seen.append(1))
    return seen


def reloaded(tmp_path, name="s"):
    """The study as a new process would read it from the database."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}",
                                         skip_table_creation=True)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_a_batch_of_asks_and_tells_is_one_commit_each(tmp_path):
    study = make_study(tmp_path)
    seen = commits(study)
    with _batch.transaction(study):
        trials = [study.ask(SPACE) for _ in range(16)]
        for t in trials:
            t.set_user_attr("job_dir", f"/sweep/{t.number}")
    assert len(seen) == 1
    assert [t.number for t in trials] == list(range(16))
    with _batch.transaction(study):
        for t in trials:
            study.tell(t, t.params["lr"])
    assert len(seen) == 2
    saved = reloaded(tmp_path)
    assert [t.number for t in saved] == list(range(16))
    assert all(t.state == TrialState.COMPLETE for t in saved)
    assert [t.params for t in saved] == [t.params for t in trials]
    assert [t.value for t in saved] == [t.params["lr"] for t in trials]
    assert [t.user_attrs["job_dir"] for t in saved] == [f"/sweep/{n}" for n in range(16)]
    # without a batch, Optuna commits every write: a new trial, each parameter, each attribute
    seen.clear()
    study.ask(SPACE).set_user_attr("job_dir", "/sweep/16")
    assert len(seen) >= 4


def test_a_batch_that_raises_writes_nothing(tmp_path):
    study = make_study(tmp_path)
    study.tell(study.ask(SPACE), 0.5)
    with pytest.raises(RuntimeError, match="killed"):
        with _batch.transaction(study):
            [study.ask(SPACE) for _ in range(4)]
            raise RuntimeError("killed mid-batch")
    assert len(reloaded(tmp_path)) == 1
    # the storage works on, one write at a time, after the batch
    study.ask(SPACE)
    assert [t.state for t in reloaded(tmp_path)] == [TrialState.COMPLETE, TrialState.RUNNING]


def test_count_asks_the_database_what_loading_every_trial_finds(tmp_path):
    study = make_study(tmp_path)
    storage = study._storage
    statuses = ["ok", "ok", "diverged", "failed", "killed", None, "ok"]
    for status in statuses:
        t = study.ask(SPACE)
        if status == "ok":
            study.tell(t, 0.5)
        elif status is not None:
            storage.set_trial_user_attr(t._trial_id, "status", status)
            study.tell(t, state=TrialState.FAIL)
    # a killed trial and a running one do not count toward n_trials
    assert _batch.count(study) == (5, 1) == (len(_batch.finished_trials(study)), 1)
    assert _batch.best_line(study, ["val/accuracy"]).startswith("best val/accuracy 0.5000")
    journal = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    assert _batch.count(journal) == (0, 0)  # any other storage: loaded and counted
    assert _batch.best_line(journal, ["loss"]) == "no finished trial yet"


def test_a_batch_tell_refused_for_one_trial_tells_the_others(tmp_path, caplog):
    """A trial another worker marked failed while it ran: the batch's transaction rolls back,
    its trials are told one by one, and that trial is skipped with a warning."""
    study = make_study(tmp_path)
    trials = [study.ask(SPACE) for _ in range(3)]
    study._storage.set_trial_state_values(trials[1]._trial_id, TrialState.FAIL)  # "elsewhere"
    sweeper = HpjaxSweeperImpl("random", 3, 3, 0, None, None, "s", None, "max", True)
    results = []
    for value in (0.1, 0.2, 0.3):
        ret = JobReturn()
        ret.status, ret.return_value = JobStatus.COMPLETED, value
        results.append(ret)
    with caplog.at_level(logging.WARNING):
        sweeper._tell_batch(study, trials, results)
    assert "trial 1 was marked failed by another worker" in caplog.text
    saved = reloaded(tmp_path)
    assert [t.state for t in saved] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert [saved[0].value, saved[2].value] == [0.1, 0.3]
