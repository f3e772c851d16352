"""Flax NNX and Equinox models through what a Linen one goes through (issue 22, item 3): a
Hyperband sweep and an Optuna pruner in process, a successive-halving bracket in chunks of one
submitit job, host metrics, and `hpjax.load` giving back the user's own object. Each kind's
sweeps here share its one program (2 epochs, populations of one trial: compiling is most of a
test's time, and a smaller population compiles again), so each kind's tests go to one pytest
worker."""

import json

import equinox as eqx
import numpy as np
import pytest
import sklearn.metrics as sk
from flax import nnx
from optuna.trial import TrialState
from test_fidelity import hpjax_status, logged
from test_models import BY_KIND, PROJECTS

import hpjax
from helpers import epochs_run, multirun, read_summary, trials_in
from hpjax.api import job_config
from hpjax.engine.loop import train_population

KINDS = {"nnx": nnx.Module, "equinox": eqx.Module}


@pytest.fixture(autouse=True)
def _projects_on_path(monkeypatch):
    for folder, _, _ in PROJECTS.values():
        monkeypatch.syspath_prepend(str(folder))


def sweep_of(kind, *overrides):
    """An example project's MLP (8 wide, batch norm) on digits, 2 epochs, with hpjax's
    sweeper, in chunks of one trial (as the vmap launcher and hpjax_slurm split a larger
    population: a rung waits for every chunk of its bracket)."""
    folder, model, _ = PROJECTS[kind]
    return [f"hydra.searchpath=[file://{folder}/conf]", f"model={model}", "model.features=8",
            "model.batch_norm=true", "data=digits", "train.epochs=2",
            "train.early_stopping.patience=null", "hydra/sweeper=hpjax",
            "optimizer.lr=tag(log, interval(1e-3, 0.3))", "model.dropout=interval(0, 0.3)",
            "hydra.launcher.max_population=1", *overrides]


def loads_as_trained(kind, job_dir):
    """`hpjax.load(job)`: the user's own object, whose outputs are the trial's recorded test
    metrics; returns the predictions of the raw test samples and the job's result.json."""
    trained = hpjax.load(job_dir)
    module = trained.module[0] if kind == "equinox" and trained.variables.get("state") \
        else trained.module  # an Equinox model with batch norm comes with its eqx.nn.State
    assert isinstance(module, KINDS[kind])
    if kind == "nnx":  # the trained running statistics merged into the user's module
        np.testing.assert_array_equal(module.norms[0].mean.get_value(),
                                      trained.variables["state"]["norms.0.mean"])
    x, y = trained.data.x_test, trained.data.y_test
    raw = x.reshape(len(x), -1) * trained.data.std + trained.data.mean  # as the data gave them
    predicted = trained.predict(raw)
    result = json.loads((job_dir / "result.json").read_text())
    # trained in a population, evaluated alone: float rounding may move one sample at most
    accuracy = float(np.mean(predicted == trained.data.classes[y]))
    assert accuracy == pytest.approx(result["test"]["test/accuracy"], abs=1 / len(y))
    return predicted, trained.data.classes[y], result


@pytest.mark.parametrize("kind", BY_KIND)
def test_hyperband_halves_user_models_with_host_metrics(kind, tmp_path):
    """R = 2, eta = 2: brackets 2x1 1x2 and 2x2. The loser of the rung stops at epoch 1, the
    winner goes on with its parameters and batch statistics; the best trial loads back as the
    user's object, and its host metric is scikit-learn's score of its `.predict`."""
    sweep = tmp_path / "hb"
    with logged("hpjax") as lines:
        multirun(sweep_of(kind, "hydra.sweeper.algorithm=hyperband",
                          "hydra.sweeper.n_trials=null", "hydra.sweeper.eta=2",
                          "task.host_metrics=[f1_macro]"), sweep)
    assert [line for line in lines if " rung " in line] == [
        "[bracket 1: 2x1 1x2] rung 1 (epoch 1): 2 trials, 1 promoted"]
    assert epochs_run(sweep) == {1: 1, 2: 3}
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    assert [t.user_attrs["bracket"] for t in trials] == [0, 0, 1, 1]
    assert [len(t.intermediate_values) for t in trials if t.state == TrialState.PRUNED] == [1]
    first = [t.intermediate_values[1] for t in trials[:2]]
    winner = trials[first.index(max(first))]  # val/accuracy: the higher goes on
    assert winner.state == TrialState.COMPLETE and len(winner.intermediate_values) == 2
    # it went on from its state at the rung: its epochs are those of the trial trained alone
    alone = train_population([job_config(sweep / str(winner.number))])[0]
    rows = (sweep / str(winner.number) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["val/loss"] for r in rows] == pytest.approx(
        [r["val/loss"] for r in alone.rows], rel=1e-5)
    best = min(read_summary(sweep), key=lambda r: int(r["rank"] or 99))
    assert best["status"] == "ok"
    predicted, truth, result = loads_as_trained(kind, sweep / best["trial"])
    assert float(np.mean(predicted == truth)) > 0.5
    assert result["test"]["test/f1_macro"] == pytest.approx(
        sk.f1_score(truth, predicted, average="macro", zero_division=0), abs=0.01)


@pytest.mark.parametrize("kind", BY_KIND)
def test_an_optuna_pruner_stops_user_models_as_its_rule_says(kind, tmp_path):
    """`pruner=asha` (Optuna's SuccessiveHalvingPruner, min_resource 1, eta 3: one rung at
    epoch 1) over 4 trials one after another: a trial goes on past epoch 1 only if its value
    is the best of those that reached epoch 1 so far (fewer than 6 trials: the top third is
    one); a pruned trial's result.json, study and learning curve end at epoch 1, and its best
    epoch's model loads back."""
    sweep = tmp_path / "asha"
    multirun(sweep_of(kind, "hydra.sweeper.algorithm=random", "hydra.sweeper.pruner=asha",
                      "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=1",
                      "objective.metric=val/loss", "objective.mode=min"), sweep)
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    first = [t.intermediate_values[1] for t in trials]
    kept = [v <= min(first[:k + 1]) for k, v in enumerate(first)]
    assert kept[0] and kept.count(False) >= 1
    for t, goes_on in zip(trials, kept, strict=True):
        epochs = len(t.intermediate_values)
        state, status = (TrialState.COMPLETE, "ok") if goes_on else (TrialState.PRUNED, "pruned")
        assert (t.state, epochs) == (state, 2 if goes_on else 1)
        stopped = None if goes_on else {
            "epoch": 1, "reason": "Optuna's SuccessiveHalvingPruner at epoch 1"}
        assert hpjax_status(sweep / str(t.number)) == (status, epochs, stopped)
        assert t.user_attrs.get("stopped") == stopped
        rows = (sweep / str(t.number) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["val/loss"] for r in rows] == pytest.approx(
            [t.intermediate_values[e] for e in range(1, epochs + 1)])
    pruned = trials[kept.index(False)]
    loads_as_trained(kind, sweep / str(pruned.number))  # its best epoch's model, kept


@pytest.mark.usefixtures("unset_version_base")
@pytest.mark.parametrize("kind,by_rung,jobs", [
    pytest.param("nnx", True, 3, marks=pytest.mark.xdist_group("models_nnx")),
    pytest.param("equinox", False, 1, marks=pytest.mark.xdist_group("models_equinox"))])
def test_a_bracket_of_user_models_halves_in_chunks_of_submitit_jobs(
        kind, by_rung, jobs, tmp_path, monkeypatch, jobs_share_the_cache):
    """Successive halving (2x1 1x2) through `hpjax_submitit_local` (hpjax_slurm's local twin)
    in chunks of one trial, run from the project's folder as a user runs it (each job imports
    the project's module from there). By rung (the default): a job per chunk to the rung, then
    the promoted trial's chunk again, from its checkpoint (the NNX module's parameters and
    batch statistics saved in one process and restored in another); `by_rung=false`: one job
    whose two populations take turns at the rung. The epochs run are the bracket's, and every
    learning curve is the one the same sweep trains in this process, bit for bit."""
    folder, _, _ = PROJECTS[kind]
    monkeypatch.chdir(folder)
    sha = sweep_of(kind, "hydra.sweeper.algorithm=sha", "hydra.sweeper.eta=2",
                   "hydra.sweeper.n_trials=null")
    sweep, here = tmp_path / "sha", tmp_path / "here"
    multirun([*sha, "hydra/launcher=hpjax_submitit_local", "hydra.launcher.poll_s=0.2",
              f"hydra.launcher.by_rung={str(by_rung).lower()}"], sweep)
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == jobs
    assert epochs_run(sweep) == {1: 1, 2: 1}
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    assert [t.state for t in trials].count(TrialState.PRUNED) == 1
    first = [t.intermediate_values[1] for t in trials]
    winner = first.index(max(first))
    assert trials[winner].state == TrialState.COMPLETE
    results = [json.loads((sweep / str(t.number) / "result.json").read_text()) for t in trials]
    # by rung, the winner's second job went on from the checkpoint its first left at the rung
    assert results[winner]["resumed_from_epoch"] == (1 if by_rung else None)
    assert [(r["launcher"], r["population"]["members"]) for r in results] == [
        ("hpjax_submitit_local (population)", 1)] * 2  # a chunk each
    multirun(sha, here)

    def curves(directory):
        return [(t.params, t.intermediate_values, t.state)
                for t in sorted(trials_in(directory), key=lambda t: t.number)]

    assert curves(sweep) == curves(here)
