"""The sweeper's batched study work (hydra_plugins/hpjax_sweeper/_batch.py): a batch's asks and
tells in one transaction, trials counted by the database."""

import logging
import math

import optuna
import pytest
import sqlalchemy
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from hydra_plugins.hpjax_sweeper import _batch, _storage
from hydra_plugins.hpjax_sweeper._impl import HpjaxSweeperImpl
from hydra_plugins.hpjax_sweeper._speedups import _session

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
         "act": optuna.distributions.CategoricalDistribution(["relu", "tanh"])}


def make_study(tmp_path, name="s"):
    """A study as the sweeper creates one (its storage kept: `_storage.storage_of`)."""
    return _storage.create_study(
        optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"), study_name=name,
        direction="maximize", sampler=optuna.samplers.RandomSampler(0), load_if_exists=True)


def commits(study):
    """A list that grows by one at each commit of the study's database."""
    seen = []
    sqlalchemy.event.listen(_session.rdb(study).engine, "commit", lambda conn: seen.append(1))
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
    storage = _storage.storage_of(study)
    statuses = ["ok", "ok", "diverged", "failed", "killed", None, "ok"]
    for status in statuses:
        t = study.ask(SPACE)
        if status == "ok":
            study.tell(t, 0.5)
        elif status is not None:
            storage.set_trial_user_attr(_storage.trial_id(study, t), "status", status)
            study.tell(t, state=TrialState.FAIL)
    # a killed trial and a running one do not count toward n_trials
    assert _batch.count(study) == (5, 1) == (len(_batch.finished_trials(study)), 1)
    assert _batch.best_line(study, ["val/accuracy"]).startswith("best val/accuracy 0.5000")
    journal = _storage.create_study(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    assert _batch.count(journal) == (0, 0)  # any other storage: loaded and counted
    assert _batch.best_line(journal, ["loss"]) == "no finished trial yet"


def test_a_batch_tell_refused_for_one_trial_tells_the_others(tmp_path, caplog):
    """A trial another worker marked failed while it ran: the batch's transaction rolls back,
    its trials are told one by one, and that trial is skipped with a warning."""
    study = make_study(tmp_path)
    trials = [study.ask(SPACE) for _ in range(3)]
    _storage.storage_of(study).set_trial_state_values(  # "elsewhere"
        _storage.trial_id(study, trials[1]), TrialState.FAIL)
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


def test_progress_is_a_bar_logged_twenty_times_or_so_however_many_trials():
    milestones, logged = _batch.Milestones(), []
    for finished in range(64, 10_064, 64):
        if milestones.due(min(finished, 10_000), 10_000):
            logged.append(min(finished, 10_000))
    # the first 20 batches (12.8% of the trials), then at 15%, 20%, ... 95% and the end
    assert logged[:20] == [64 * b for b in range(1, 21)] and logged[-1] == 10_000
    assert len(logged) == 20 + 17 + 1
    small = _batch.Milestones()
    assert [small.due(f, 8) for f in (4, 8)] == [True, True]
    assert _batch.bar(6400, 10_000) == "|████████████░░░░░░░░| 64%"
    assert _batch.bar(0, 10) == "|░░░░░░░░░░░░░░░░░░░░| 0%"


def test_the_table_shows_the_best_twenty_and_ten_others_of_thousands(tmp_path):
    from rich.console import Console

    from hpjax.report.summary import format_table
    from hpjax.report.trials import Trial
    from hpjax.results import Result

    def trial(job, status, value):
        result = Result(status, value, "val/accuracy", "max", best={"val/accuracy": value},
                        error=None if value else "bad")
        return Trial(job, tmp_path / str(job), [f"optimizer.lr={job}"], result)

    trials = [trial(j, "ok", j / 3000) for j in range(3000)]
    trials += [trial(3000 + j, "failed", None) for j in range(40)]
    console = Console(width=200, record=True)
    console.print(format_table(trials, {"val/accuracy": "max"}))
    text = console.export_text()
    rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in text.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()]
    assert [rank for rank, _ in rows] == [str(i) for i in range(1, 21)] + ["-"] * 10
    assert [int(job) for _, job in rows] == [*range(2999, 2979, -1), *range(3000, 3010)]
    assert "the best 20 and 10 not finished of 3040 trials: summary.csv lists every one" in text


@pytest.mark.slow  # about 2 minutes (scripts/bench_overhead.py): `-m slow`
@pytest.mark.parametrize("n", [1000])
def test_a_thousand_trial_sweep_leaves_every_job_directory_and_study_row(tmp_path, n):
    """1,000 trials of 1 epoch in two batches (one compile): each has its job directory with
    Hydra's files, its metrics and result, and its row in the study with the same value."""
    import csv
    import json

    from omegaconf import OmegaConf

    from helpers import multirun

    sweep = tmp_path / "sweep"
    returns = multirun(["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
                        f"hydra.sweeper.n_trials={n}", f"hydra.sweeper.batch_size={n // 2}",
                        f"hydra.launcher.max_population={n // 2}",
                        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
                        "model.dropout=interval(0, 0.5)", "data=iris", "model.width=8",
                        "model.num_layers=1", "train.epochs=1", "train.save_params=none",
                        "train.early_stopping.patience=null"], sweep)
    assert [len(batch) for batch in returns] == [n // 2, n // 2]
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep / 'study.db'}",
                                         skip_table_creation=True)
    rows = optuna.load_study(study_name="hpjax", storage=storage).get_trials()
    assert [t.number for t in rows] == list(range(n))
    assert {t.state for t in rows} == {TrialState.COMPLETE}
    assert sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit()) == list(range(n))
    for t in rows:
        job = sweep / str(t.number)
        assert t.user_attrs["job_dir"] == str(job) and t.user_attrs["status"] == "ok"
        assert sorted(p.name for p in job.iterdir()) == [
            ".hydra", "hpjax.log", "metrics.jsonl", "result.json"]  # the log: <task name>.log
        assert sorted(p.name for p in (job / ".hydra").iterdir()) == [
            "config.yaml", "hydra.yaml", "overrides.yaml"]
        result = json.loads((job / "result.json").read_text())
        assert result["status"] == "ok" and result["objective"] == t.value
        assert len((job / "metrics.jsonl").read_text().splitlines()) == 1
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"optimizer.lr={t.params['optimizer.lr']:.6g}" in overrides
        assert f"activation={t.params['activation']}" in overrides
    assert "ok: val/accuracy=" in (sweep / str(n - 1) / "hpjax.log").read_text()
    with open(sweep / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert sorted(int(r["trial"]) for r in summary) == list(range(n))
    assert sorted(int(r["rank"]) for r in summary) == list(range(1, n + 1))


def test_a_told_jobs_return_reads_its_hydra_config_back_from_its_job_directory(tmp_path):
    from omegaconf import OmegaConf

    job = tmp_path / "7"
    (job / ".hydra").mkdir(parents=True)
    hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job)},
                                            "output_subdir": ".hydra", "job": {"num": 7}}})
    OmegaConf.save(hydra_cfg, job / ".hydra" / "hydra.yaml")
    ret = JobReturn(overrides=["a=1"], cfg=OmegaConf.create({"a": 1}), hydra_cfg=hydra_cfg,
                    status=JobStatus.COMPLETED, _return_value=0.5)
    unsaved = JobReturn(hydra_cfg=OmegaConf.create({"hydra": {"job": {"num": 8}}}))
    slim, kept = _batch.slim([ret, unsaved])
    assert slim.__dict__.get("hydra_cfg") is None and "_kept" in slim.__dict__
    assert slim.hydra_cfg == hydra_cfg and slim.hydra_cfg.hydra.job.num == 7
    assert (slim.overrides, slim.cfg, slim.status, slim.return_value) == (
        ["a=1"], {"a": 1}, JobStatus.COMPLETED, 0.5)
    assert kept.hydra_cfg.hydra.job.num == 8  # nothing on disk: kept in memory


def test_tpe_models_the_best_and_the_most_recent_trials_of_a_large_study():
    from hydra_plugins.hpjax_sweeper._speedups._tpe import WindowedTPESampler, _Window

    def study_of(n, sampler):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.add_trials([optuna.trial.create_trial(
            params={"lr": 10 ** (-4 + 3 * ((i * 37) % n) / n), "act": "relu"},
            distributions=SPACE, value=((i * 37) % n) / n) for i in range(n)])
        return study

    study = study_of(50, None)
    study.ask(SPACE)  # a running trial: TPE's constant liar sees it
    seen = _Window(study, 20)._get_trials(states=None)
    best = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.value)[:2]
    assert len(seen) == 21 and seen[-1].state == TrialState.RUNNING
    assert {t.number for t in best} <= {t.number for t in seen}
    assert [t.number for t in seen[:-1] if t not in best] == list(range(32, 50))
    # up to the window, the same proposals as Optuna's TPE
    ours = study_of(40, WindowedTPESampler(seed=3, multivariate=True, n_startup_trials=10,
                                           max_observations=40))
    theirs = study_of(40, optuna.samplers.TPESampler(seed=3, multivariate=True,
                                                     n_startup_trials=10))
    assert [ours.ask(SPACE).params for _ in range(3)] == [
        theirs.ask(SPACE).params for _ in range(3)]


@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_a_batch_asked_as_one_proposes_what_one_ask_at_a_time_proposes(tmp_path, algorithm):
    """`_batch.asking` reads the study once per batch and TPE fits once per batch: the same
    points as Optuna's own asks, batch after batch; and `finish` tells as `study.tell`."""
    from contextlib import nullcontext

    from hydra_plugins.hpjax_sweeper._search import make_sampler

    def sweep(name, batched):
        study = _storage.create_study(
            optuna.storages.RDBStorage(f"sqlite:///{tmp_path / name}"), direction="minimize",
            sampler=make_sampler(algorithm, seed=1, n_objectives=1, batch_size=8,
                                 conditional=False))
        for _ in range(3):  # TPE models the third batch: 14 trials finished, 10 needed
            with _batch.transaction(study), (_batch.asking(study) if batched else nullcontext()):
                trials = [study.ask(SPACE) for _ in range(8)]
            with _batch.transaction(study):
                for t in trials[:-1]:
                    value = abs(math.log10(t.params["lr"]) + 2) + (t.params["act"] == "tanh")
                    if batched:
                        _batch.finish(study, _storage.trial_id(study, t),
                                      TrialState.COMPLETE, [value])
                    else:
                        study.tell(t, value)
            study.tell(trials[-1], state=TrialState.FAIL)
        return study.get_trials()

    ours, theirs = sweep("a.db", True), sweep("b.db", False)
    assert [t.params for t in ours] == [t.params for t in theirs] and len(ours) == 24
    assert [(t.state, t.values) for t in ours] == [(t.state, t.values) for t in theirs]
    assert len({t.params["lr"] for t in ours}) == 24


def _rows(path):
    """Every row of a study's database that describes its trials (ids and timestamps left
    out): what Optuna, optuna-dashboard and a resumed sweep read."""
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        q = lambda sql: [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
        number = "(SELECT number FROM trials t WHERE t.trial_id = x.trial_id)"
        rows = {
            "trials": q("SELECT number, state, datetime_complete IS NULL FROM trials "
                        "ORDER BY number"),
            "params": q(f"SELECT {number}, param_name, param_value, distribution_json FROM "
                        "trial_params x ORDER BY 1, 2"),
            "values": q(f"SELECT {number}, objective, value, value_type FROM trial_values x "
                        "ORDER BY 1, 2"),
            "steps": q(f"SELECT {number}, step, intermediate_value FROM "
                       "trial_intermediate_values x ORDER BY 1, 2"),
            "user": q(f"SELECT {number}, key, value_json FROM trial_user_attributes x "
                      "ORDER BY 1, 2"),
            "system": q(f"SELECT {number}, key, value_json FROM trial_system_attributes x "
                        "ORDER BY 1, 2"),
            "heartbeats": q(f"SELECT {number} FROM trial_heartbeats x ORDER BY 1"),
        }
    engine.dispose()
    return rows


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_a_batch_written_in_bulk_is_the_study_optunas_own_writes_make(tmp_path, algorithm):
    """`_bulk`: a batch's asks run in memory and are written in one transaction, its results
    told the same way; the database holds what Optuna's one-write-at-a-time path writes, row for
    row (numbers, parameters, values, objective per epoch, attributes, heartbeats), and TPE
    proposes the same points from it."""
    from hydra_plugins.hpjax_sweeper import _bulk
    from hydra_plugins.hpjax_sweeper._search import make_sampler

    def sweep(name, bulk):
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / name}",
                                             heartbeat_interval=60)
        study = optuna.create_study(storage=storage, direction="minimize",
                                    sampler=make_sampler(algorithm, seed=1, n_objectives=1,
                                                         batch_size=8, conditional=False))
        attrs = lambda n: {"job_dir": f"/sweep/{n}"}
        for _ in range(3):
            if bulk:
                assert _bulk.applies(study)
                trials = _bulk.ask(study, 8, lambda s: s.ask(SPACE), attrs, heartbeat=True)
            else:
                trials = [study.ask(SPACE) for _ in range(8)]
                for t in trials:
                    t.set_user_attr("job_dir", f"/sweep/{t.number}")
                    study._storage.record_heartbeat(t._trial_id)
            outcomes = []
            for i, t in enumerate(trials):
                value = abs(math.log10(t.params["lr"]) + 2) + (t.params["act"] == "tanh")
                ok = i != 7
                outcomes.append(_bulk.Outcome(
                    t._trial_id, TrialState.COMPLETE if ok else TrialState.FAIL,
                    [value] if ok else None, {0: value + 1, 1: value} if ok else {},
                    {"status": "ok" if ok else "failed", "epochs_run": 2}))
            if bulk:
                assert _bulk.tell(study, outcomes) == []
            else:
                for o in outcomes:
                    for step, v in o.intermediate.items():
                        study._storage.set_trial_intermediate_value(o.trial_id, step, v)
                    for k, v in o.user_attrs.items():
                        study._storage.set_trial_user_attr(o.trial_id, k, v)
                    study.tell(study._storage.get_trial_number_from_id(o.trial_id), o.values,
                               state=o.state)
        assert [t.number for t in trials] == list(range(16, 24))
        assert trials[0].params == study.trials[16].params  # the returned trials are the rows'
        storage.engine.dispose()
        return _rows(tmp_path / name)

    ours, theirs = sweep("a.db", True), sweep("b.db", False)
    assert ours == theirs
    assert len(ours["trials"]) == 24 and len(ours["heartbeats"]) == 24
    assert len({row[2] for row in ours["params"] if row[1] == "lr"}) == 24


def test_a_bulk_batch_checks_distributions_and_refuses_finished_trials(tmp_path):
    from hydra_plugins.hpjax_sweeper import _bulk

    study = make_study(tmp_path)
    study.tell(study.ask(SPACE), 0.5)
    other = {"lr": optuna.distributions.IntDistribution(1, 10), "act": SPACE["act"]}
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        _bulk.ask(study, 2, lambda s: s.ask(other), lambda n: {}, heartbeat=False)
    assert len(reloaded(tmp_path)) == 1  # nothing written
    trials = _bulk.ask(study, 2, lambda s: s.ask(SPACE), lambda n: {}, heartbeat=False)
    study._storage.set_trial_state_values(trials[0]._trial_id, TrialState.FAIL)  # "elsewhere"
    refused = _bulk.tell(study, [_bulk.Outcome(t._trial_id, TrialState.COMPLETE, [0.1])
                                 for t in trials])
    assert refused == [trials[0]._trial_id]
    assert [(t.state, t.value) for t in reloaded(tmp_path)] == [
        (TrialState.COMPLETE, 0.5), (TrialState.FAIL, None), (TrialState.COMPLETE, 0.1)]
