"""Every search algorithm and Optuna pruner a user can name runs through `hpjax -m` (Hydra's
multirun with hpjax's sweeper, in this process) on one program: iris, a hidden layer of 8, the
learning rate and dropout searched (traced numbers), populations padded to 8 members. Each
sweep's study holds the algorithm's own proposals, and a pruner prunes."""

import math

import optuna
import pytest

from helpers import multirun, trials_in

pytestmark = pytest.mark.xdist_group("algorithms")  # one worker: the program compiles once

BASE = ["hydra/sweeper=hpjax", "data=iris", "model.width=8", "train.early_stopping.patience=null",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))", "model.dropout=interval(0, 0.3)"]
# tpe and gp start from 10 random trials, nsga2 from a random generation of 8, and qmc and cmaes
# sample a batch at random until a trial has finished: in batches of 5, the third (2 trials) is
# theirs
STARTUP = ["hydra.sweeper.n_trials=12", "hydra.sweeper.batch_size=5"]
ONE_BATCH = ["hydra.sweeper.n_trials=5", "hydra.sweeper.batch_size=5"]


def sweep_params(tmp_path, name, overrides):
    """The study's trials of `hpjax -m <BASE> <overrides>`: (state, lr, dropout, the point: every
    searched value, the sweeper's default activation choice too) each."""
    multirun([*BASE, *overrides], tmp_path / name)
    return [(t.state, t.params.get("optimizer.lr"), t.params.get("model.dropout"),
             tuple(sorted(t.params.items())))
            for t in sorted(trials_in(tmp_path / name), key=lambda t: t.number)]


@pytest.fixture(scope="module")
def random_trials(tmp_path_factory):
    """What RandomSampler(seed 0) proposes: an algorithm that fell back to it would match."""
    return sweep_params(tmp_path_factory.mktemp("random"), "random",
                        ["hydra.sweeper.algorithm=random", *STARTUP, "train.epochs=2"])


@pytest.mark.parametrize("algorithm, sized", [
    ("tpe", STARTUP), ("gp", STARTUP), ("cmaes", STARTUP), ("qmc", STARTUP),
    ("nsga2", STARTUP), ("random", ONE_BATCH)])
def test_each_algorithm_sweeps_with_its_own_proposals(tmp_path, random_trials, algorithm, sized):
    if algorithm == "gp":
        import torch

        torch.set_num_threads(1)  # tests run two at a time: threads would only contend
    trials = sweep_params(tmp_path, algorithm, [f"hydra.sweeper.algorithm={algorithm}",
                                                *sized, "train.epochs=2"])
    assert len(trials) == len(random_trials) if sized is STARTUP else len(trials) == 5
    assert {t[0] for t in trials} == {optuna.trial.TrialState.COMPLETE}
    for _, lr, dropout, _ in trials:
        assert 1e-3 <= lr <= 1e-1 and 0 <= dropout <= 0.3
    points = {t[3] for t in trials}
    if algorithm != "nsga2":  # (its crossover may give a child its parent's genes, all of them)
        assert len(points) == len(trials)  # no point proposed twice
    random = {t[3] for t in random_trials}
    if algorithm == "random":
        assert points == {t[3] for t in random_trials[:5]}  # the same seed, the same trials
    elif algorithm == "nsga2":  # offspring: crossover may copy a parent whole, not all of them
        assert {t[3] for t in trials[10:]} - random
    else:  # the algorithm's own batch: none of them a random proposal
        assert not {t[3] for t in trials[10:]} & random


def test_grid_runs_every_point_of_its_choices(tmp_path):
    # in batches of 4: a population of 8 sharing one activation would have it fixed in a
    # program of its own (population.FIXED_ACTIVATION_FROM), smaller ones run the sweeps' own
    trials = sweep_params(tmp_path, "grid", [
        "hydra.sweeper.algorithm=grid", "hydra.sweeper.n_trials=null",
        "hydra.sweeper.batch_size=4", "optimizer.lr=choice(0.001, 0.01, 0.03, 0.1)",
        "model.dropout=choice(0, 0.3)", "activation=relu", "train.epochs=2"])
    assert sorted((float(lr), float(d)) for _, lr, d, _ in trials) == sorted(
        (lr, d) for lr in (0.001, 0.01, 0.03, 0.1) for d in (0, 0.3))


@pytest.mark.parametrize("pruner", ["median", "hyperband", "asha"])
def test_each_pruner_prunes_trials_below_its_rule(tmp_path, pruner):
    """10 trials in batches of 2 (a batch is judged against those before it; the median rule
    waits for 5 finished trials), 6 epochs from a rung of 1 epoch: every pruner stops some
    trials early, and a pruned trial reported fewer epochs than a finished one. Where a trial
    stops, its population of 2 gathers into 1 slot: the pruners compile the two sizes once."""
    trials = trials_in(_pruned(tmp_path, pruner))
    states = [t.state for t in trials]
    assert len(trials) == 10
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states
    for t in trials:
        epochs = len(t.intermediate_values)
        if t.state == optuna.trial.TrialState.PRUNED:
            assert 1 <= epochs < 6
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and epochs == 6
            assert math.isfinite(t.value)


def _pruned(tmp_path, pruner):
    multirun([*BASE, "hydra.sweeper.algorithm=random", f"hydra.sweeper.pruner={pruner}",
              "hydra.sweeper.n_trials=10", "hydra.sweeper.batch_size=2", "train.epochs=6",
              "hydra.sweeper.min_epochs=1", "optimizer.lr=tag(log, interval(1e-4, 1e-1))"],
             tmp_path / pruner)
    return tmp_path / pruner
