"""Population-based training inside one population: exploit copies, explore, lineage, replay."""

import contextlib

import jax
import numpy as np
import pytest

from helpers import compose_config
from hpjax.engine.compile import CompileStats
from hpjax.engine.jobs import train_trials
from hpjax.engine.schedulers import pbt as pbt_lib
from hpjax.engine.state import PopulationRun

LRS = [0.3, 0.03, 0.003, 3e-4]
# The program family of test_fidelity.py (iris, SGD, 4 epochs): compiled once for both files.
BASE = ["data=iris", "optimizer=sgd", "train.epochs=4", "train.batch_size=16",
        "train.early_stopping.patience=null", "model.width=16", "model.dropout=0.1"]


class Watched(pbt_lib.PBT):
    """PBT that also keeps every explored value."""

    explored: list

    def _explore(self, key, value):
        out = super()._explore(key, value)
        self.explored.append((key, value, out))
        return out


@contextlib.contextmanager
def watched_exploits():
    """After each exploit in the block: the donor's and recipient's variables, the recipient's
    learning rate in the optimizer state and in its config, as the loop left them."""
    seen = []
    exploit = PopulationRun.exploit

    def watched(run, epoch, pairs):
        exploit(run, epoch, pairs)
        params = jax.device_get(run.states.params)
        for d, r, _ in pairs:
            ds, rs = run.members[d].slot, run.members[r].slot
            lr = jax.device_get(run.states.opt_state.hyperparams["lr"])[rs]
            seen.append((jax.tree.map(lambda a, ds=ds: a[ds], params),
                         jax.tree.map(lambda a, rs=rs: a[rs], params), lr,
                         run.members[r].cfg.optimizer.lr))

    PopulationRun.exploit = watched
    try:
        yield seen
    finally:
        PopulationRun.exploit = exploit


@pytest.fixture(scope="module")
def pbt_run():
    cfgs = [compose_config([*BASE, f"optimizer.lr={lr}"]) for lr in LRS]
    pbt = Watched({"optimizer.lr": pbt_lib.Bounds(1e-4, 1.0, log=True),
                   "model.dropout": pbt_lib.Bounds(0.0, 0.5)}, interval=1, fraction=0.25,
                  resample_probability=0.25, seed=0)
    pbt.explored = []
    train_trials(cfgs)  # the population's programs, compiled before counting PBT's
    count = CompileStats.count
    with watched_exploits() as pbt.seen:
        outcomes = train_trials(cfgs, scheduler=pbt)
    return pbt, outcomes, CompileStats.count - count


def test_exploit_copies_the_donors_parameters_exactly_and_explores(pbt_run):
    pbt, outcomes, _ = pbt_run
    assert [c[0] for c in pbt.copies] == [1, 2, 3]  # every epoch but the last
    for donor, recipient, lr, cfg_lr in pbt.seen:
        for a, b in zip(jax.tree.leaves(donor), jax.tree.leaves(recipient), strict=True):
            np.testing.assert_array_equal(a, b)
        assert lr == pytest.approx(cfg_lr, rel=1e-6)  # the explored lr is in the state
    for epoch, donor, k in pbt.copies:
        lineage = outcomes[k].result.pbt["lineage"]
        assert {"epoch": epoch, "donor": donor} in lineage
    # the recipient's schedule is the donor's and then its explored values, from epoch + 1
    # (test_explore_perturbs_by_0_8_or_1_2_within_bounds_or_resamples checks the rule itself)
    epoch, donor, k = pbt.copies[-1]
    schedule = outcomes[k].result.pbt["schedule"]
    assert schedule[-1]["epoch"] == epoch + 1
    assert schedule[:-1] == outcomes[donor].result.pbt["schedule"][:len(schedule) - 1]
    assert pbt.explored[-2:] == [(key, schedule[-2][key], schedule[-1][key])
                                 for key in ("optimizer.lr", "model.dropout")]


@pytest.mark.parametrize("resample, factors, resampled", [(0.0, 2, (0, 0)),
                                                           (1.0, 0, (1200, 1200)),
                                                           (0.25, 2, (255, 345))])
def test_explore_perturbs_by_0_8_or_1_2_within_bounds_or_resamples(resample, factors, resampled):
    """400 explores of each of three values: a perturbed value is the value times 0.8 or 1.2,
    clipped into the bounds (both factors seen); with `resample_probability` p, about 1200 p are
    drawn anew from the range instead (at 0.25: 300, binomial sd 15, three sd either side)."""
    bounds = pbt_lib.Bounds(1e-4, 1.0, log=True)
    pbt = pbt_lib.PBT({"optimizer.lr": bounds}, resample_probability=resample, seed=0)
    drawn = 0
    for value, perturbed in [(0.01, {0.008, 0.012}), (0.9, {0.72, 1.0}),
                             (1.1e-4, {1e-4, 1.32e-4})]:  # the last two clipped one way
        out = [pbt._explore("optimizer.lr", value) for _ in range(400)]
        multiples = [v for v in out if any(v == pytest.approx(p, rel=1e-12) for p in perturbed)]
        drawn += len(out) - len(multiples)
        assert len({round(v, 12) for v in multiples}) == factors
        assert all(bounds.low <= v <= bounds.high for v in out)
    assert resampled[0] <= drawn <= resampled[1]
    if resample == 1.0:  # log-uniform: the mean of log10 is the middle of [-4, 0]
        logs = np.log10([pbt._explore("optimizer.lr", 0.01) for _ in range(4000)])
        assert logs.mean() == pytest.approx(-2.0, abs=0.1)


def test_pbt_compiles_nothing_and_its_schedule_replays_the_trial(pbt_run):
    """The replay: one run from the root's seed and first values, with the schedule's later
    values in train.hparam_schedule, ends where the PBT member ended."""
    pbt, outcomes, compiles = pbt_run
    assert compiles <= 1  # the gather of the exploit; explore changes traced numbers only
    k = max(range(len(outcomes)), key=lambda i: len(outcomes[i].result.pbt["lineage"]))
    record = outcomes[k].result.pbt
    first, *later = record["schedule"]
    replay = compose_config([*BASE, f"train.seed={first['train.seed']}",
                             f"optimizer.lr={first['optimizer.lr']}",
                             f"model.dropout={first['model.dropout']}",
                             "train.hparam_schedule=[" + ",".join(
                                 "'{}: {}'".format(e["epoch"], " ".join(
                                     f"{key}={v!r}" for key, v in e.items() if key != "epoch"))
                                 for e in later) + "]"])
    # padded to the 4 members the PBT population compiled, as a sweep's smaller last batch is
    [again] = train_trials([replay], pad_to_compiled=True)
    last = record["lineage"][-1]["epoch"]
    for a, b in zip(outcomes[k].rows[last:], again.rows[last:], strict=True):
        assert b["val/loss"] == pytest.approx(a["val/loss"], rel=1e-4)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-5)
    assert again.result.objective == pytest.approx(outcomes[k].result.objective, abs=1e-6)


def test_pbt_sweep_writes_a_best_schedule_that_replays_the_best_trial(tmp_path):
    """`hydra.sweeper.algorithm=pbt`: one population of 4, exploits at epochs 2; the best
    trial's schedule in best_schedule.yaml, run as `hpjax --config-name best_schedule`, ends
    at the trial's objective."""
    import json
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from helpers import multirun
    from hpjax.cli import CONF_DIR
    from hpjax.config import to_config

    sweep = tmp_path / "pbt"
    multirun([*BASE, "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=pbt",
              "activation=relu",
              "hydra.sweeper.n_trials=4", "hydra.sweeper.pbt.interval=2",
              "optimizer.lr=tag(log, interval(1e-3, 0.3))", "model.dropout=interval(0, 0.3)"],
             sweep)
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(4)]
    assert sum(len(r["pbt"]["lineage"]) for r in results) == 1  # one exploit, at epoch 2
    # `hpjax --config-dir <sweep> --config-name best_schedule`: hpjax's groups beside the file
    conf = shutil.copytree(CONF_DIR, tmp_path / "conf")
    shutil.copy(sweep / "best_schedule.yaml", conf)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf), version_base="1.3"):
        replay = to_config(compose("best_schedule"))
    GlobalHydra.instance().clear()
    best = max(results, key=lambda r: r["objective"])
    assert len(replay.train.hparam_schedule) == len(best["pbt"]["schedule"]) - 1
    [again] = train_trials([replay], pad_to_compiled=True)  # the sweep's compiled 4 members
    assert again.result.objective == pytest.approx(best["objective"], abs=1e-6)
    assert again.result.best["val/loss"] == pytest.approx(best["best"]["val/loss"], rel=1e-4)


def test_pbt_with_a_static_key_fails_before_anything_trains(tmp_path):
    from helpers import multirun

    with pytest.raises(SystemExit) as info:  # one line, exit 2 (hpjax.errors)
        multirun([*BASE, "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=pbt", "activation=relu",
                  "hydra.sweeper.n_trials=4", "optimizer.lr=interval(1e-3, 0.1)",
                  "model.width=choice(16, 32)"], tmp_path / "bad")
    assert "must be searched as an interval of floats" in str(info.value) + str(
        info.value.__cause__)
    with pytest.raises(SystemExit) as info:  # one line, exit 2 (hpjax.errors)
        multirun([*BASE, "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=pbt", "activation=relu",
                  "hydra.sweeper.n_trials=4", "optimizer.lr=interval(1e-3, 0.1)",
                  "schedule=warmup_cosine",
                  "schedule.warmup_fraction=interval(0.05, 0.2)"],
                 tmp_path / "bad2")
    assert "PBT changes traced numbers only" in str(info.value) + str(info.value.__cause__)


def test_a_pbt_population_that_dies_resumes_from_its_checkpoints(pbt_run, tmp_path):
    """The population above with `train.checkpoint_every=1`, killed during epoch 3 (after two
    exploits) and run again on its job directories: it trains epochs 3 and 4 only, and its
    exploits, lineages, schedules and numbers equal the uninterrupted run's."""
    pbt, outcomes, _ = pbt_run
    cfgs = [compose_config([*BASE, f"optimizer.lr={lr}", "train.checkpoint_every=1"])
            for lr in LRS]
    dirs = [str(tmp_path / str(i)) for i in range(len(cfgs))]

    def explorer():
        return pbt_lib.PBT(dict(pbt.bounds), interval=1, fraction=0.25,
                           resample_probability=0.25, seed=0)

    class Killed(Exception):
        pass

    def killed_at_3(report):
        if report.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        train_trials(cfgs, scheduler=explorer(), output_dirs=dirs, on_progress=killed_at_3)
    epochs, again = [], explorer()
    resumed = train_trials(cfgs, scheduler=again, output_dirs=dirs,
                           on_progress=lambda r: epochs.append(r.epoch))
    assert epochs == [3, 4]
    assert again.copies == pbt.copies
    for r, o in zip(resumed, outcomes, strict=True):
        assert r.result.resumed_from_epoch == 2
        assert r.result.pbt == o.result.pbt
        assert [row["val/loss"] for row in r.rows] == pytest.approx(
            [row["val/loss"] for row in o.rows], rel=1e-5)
        assert r.result.test == pytest.approx(o.result.test, rel=1e-5)
