"""Every search algorithm against one contract, and the learning ones against random search."""

import functools
import math

import numpy as np
import optuna
import pytest

from helpers import need
from hydra_plugins.hpjax_sweeper._search import SearchSpaceError, make_sampler, parse

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = ["lr=tag(log, interval(1e-4, 1e-1))", "dropout=interval(0, 0.5)", "n=range(2, 20, 3)",
         "act=choice(relu, tanh, gelu)", "width=tag(int, interval(16, 256))", "epochs=7",
         "wd=tag(log, range(1, 1000))"]


def run_study(algorithm, space, objective, *, n_trials, seed=0, batch_size=4, directions=None):
    """The sweeper's loop without Hydra: ask a batch, then tell each result."""
    directions = directions or ["minimize"]
    study = optuna.create_study(sampler=make_sampler(algorithm, seed=seed,
                                                     n_objectives=len(directions),
                                                     batch_size=batch_size),
                                directions=directions)
    distributions = space.grid_distributions if algorithm == "grid" else space.distributions
    if algorithm == "grid":
        for point in space.grid()[:n_trials]:
            study.enqueue_trial(point)
    proposed = []
    while len(proposed) < n_trials:
        batch = [study.ask(distributions) for _ in range(min(batch_size, n_trials - len(proposed)))]
        for trial in batch:
            proposed.append(space.overrides(trial.params))
            study.tell(trial, objective(trial.params))
    return study, proposed


def toy_objective(params):
    return (math.log10(params["lr"]) + 2.5) ** 2 + (params["dropout"] - 0.2) ** 2


class SearchStrategyContract:
    algorithm: str
    n_trials = 16

    def propose(self, seed=0):
        space = parse(SPACE)
        objective = lambda p: toy_objective(p) if "lr" in p else 0.0
        return run_study(self.algorithm, space, objective, n_trials=self.n_trials, seed=seed)[1]

    def test_proposes_only_values_inside_the_space(self):
        for overrides in self.propose():
            values = dict(o.split("=", 1) for o in overrides)
            assert list(values) == ["lr", "dropout", "n", "act", "width", "epochs", "wd"]
            assert 1e-4 <= float(values["lr"]) <= 1e-1
            assert 0 <= float(values["dropout"]) <= 0.5
            assert values["n"] in {"2", "5", "8", "11", "14", "17"}
            assert values["act"] in {"relu", "tanh", "gelu"}
            assert 16 <= int(values["width"]) <= 256 and values["width"].isdigit()
            assert values["epochs"] == "7"
            assert 1 <= int(values["wd"]) <= 999

    def test_same_seed_same_trials_other_seed_other_trials(self):
        assert self.propose(seed=3) == self.propose(seed=3)
        assert self.propose(seed=3) != self.propose(seed=4)


class TestRandom(SearchStrategyContract):
    algorithm = "random"

    def test_log_tag_samples_log_uniformly(self):
        space = parse(["lr=tag(log, interval(1e-4, 1e-1))", "x=interval(1e-4, 1e-1)"])
        _, proposed = run_study("random", space, lambda p: 0.0, n_trials=400, batch_size=50)
        lr, x = (np.array([float(o[i].split("=")[1]) for o in proposed]) for i in (0, 1))
        # below the geometric midpoint 10**-2.5: half of a log-uniform sample, 3% of a uniform one
        assert 0.42 < np.mean(lr < 10**-2.5) < 0.58
        assert np.mean(x < 10**-2.5) < 0.08


class TestTPE(SearchStrategyContract):
    algorithm = "tpe"


class TestCMAES(SearchStrategyContract):
    algorithm = "cmaes"


class TestNSGA2(SearchStrategyContract):
    algorithm = "nsga2"


class TestQMC(SearchStrategyContract):
    algorithm = "qmc"


class TestGP(SearchStrategyContract):
    algorithm = "gp"
    n_trials = 12  # 10 random startup trials, then 2 from the Gaussian process (each a fit)

    @pytest.fixture(autouse=True)
    def _needs_torch(self):
        torch = need("torch", extra="gp")  # algorithm=gp needs PyTorch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tests run two at a time: threads would only contend
        yield
        torch.set_num_threads(threads)


class TestGrid:
    def test_grid_runs_every_combination_in_basic_sweeper_order(self):
        space = parse(["a=1,2", "b=choice(x, y)", "c=range(0, 3)", "fixed=5"])
        _, proposed = run_study("grid", space, lambda p: 0.0, n_trials=12, batch_size=5)
        assert proposed[:3] == [["a=1", "b=x", "c=0", "fixed=5"], ["a=1", "b=x", "c=1", "fixed=5"],
                                ["a=1", "b=x", "c=2", "fixed=5"]]
        assert proposed[-1] == ["a=2", "b=y", "c=2", "fixed=5"]
        assert len({tuple(p) for p in proposed}) == 12

    def test_grid_rejects_continuous_keys(self):
        with pytest.raises(SearchSpaceError) as e:
            parse(["a=1,2", "lr=interval(0.1, 1)"]).grid()
        assert str(e.value) == ("algorithm=grid needs discrete values, but lr is continuous: use "
                                "choice(...), a,b,c or range(...) instead of interval(...)")


def test_command_line_replaces_a_key_of_the_config_params():
    space = parse(["lr=interval(0.1, 1)", "act=relu,tanh", "lr=choice(0.5, 0.6)"])
    assert [p.key for p in space.params] == ["lr", "act"]
    assert space.params[0].grid_values == ("0.5", "0.6")


def test_bad_spaces_give_clear_errors():
    with pytest.raises(SearchSpaceError,
                       match=r"lr: tag\(log, interval\(0.0, 1.0\)\) needs low > 0"):
        parse(["lr=tag(log, interval(0, 1))"])
    with pytest.raises(SearchSpaceError, match="must be one of grid, random, tpe, gp, cmaes"):
        make_sampler("hyperopt", seed=0)
    with pytest.raises(SearchSpaceError, match="cmaes optimises one objective"):
        make_sampler("cmaes", seed=0, n_objectives=2)


def sphere(params):
    """A 4-D shifted sphere, minimum 0 at (1.5, -2, 0.5, 3)."""
    return sum((params[f"x{i}"] - c) ** 2 for i, c in enumerate((1.5, -2.0, 0.5, 3.0)))


SPHERE = parse([f"x{i}=interval(-5, 5)" for i in range(4)])


@functools.cache  # random search's figure serves both tests below
def mean_best(algorithm, seeds=range(10), n_trials=60, batch_size=1):
    return np.mean([run_study(algorithm, SPHERE, sphere, n_trials=n_trials, seed=s,
                              batch_size=batch_size)[0].best_value for s in seeds])


def test_tpe_and_cmaes_beat_random_search_on_a_sphere():
    # Calibrated over 4 disjoint sets of 10 seeds (0-9, 10-19, 20-29, 30-39), 60 trials each: mean
    # best value random 4.5-6.0, TPE 0.43-0.50, CMA-ES 0.78-0.96, i.e. TPE/random 0.07-0.11 and
    # CMA-ES/random 0.14-0.19. The threshold 0.5 leaves a margin of 2.5x over the worst set.
    random, tpe, cmaes = (mean_best(a) for a in ("random", "tpe", "cmaes"))
    assert tpe < 0.5 * random, (tpe, random)
    assert cmaes < 0.5 * random, (cmaes, random)


def test_learning_algorithms_still_beat_random_search_in_batches_of_8():
    # Trials asked 8 at a time (TPE's constant liar sees the 7 pending ones). Calibrated as above:
    # mean best TPE 0.50-0.77, CMA-ES 0.79-1.42 against random 4.5-6.0 (batching does not change
    # random search): ratios at most 0.17 and 0.27, threshold 0.5.
    random = mean_best("random")
    for algorithm in ("tpe", "cmaes"):
        assert mean_best(algorithm, batch_size=8) < 0.5 * random, algorithm
