"""Hyperband's brackets, successive halving inside a population, and the sweeper's use of them."""

import contextlib
import logging

import pytest

from helpers import compose_config
from hpjax.engine.compile import CompileStats
from hpjax.engine.jobs import train_trials
from hpjax.engine.schedulers import halving as fidelity


@contextlib.contextmanager
def logged(name: str):
    """The messages logger `name` logs inside the block (whatever its level and propagation)."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def test_hyperband_brackets_are_the_papers_for_r81_eta3():
    """Li et al. (JMLR 2018), Table 1: R = 81, eta = 3."""
    assert fidelity.table(fidelity.hyperband(81, 3)) == [
        "81x1 27x3 9x9 3x27 1x81",
        "34x3 11x9 3x27 1x81",
        "15x9 5x27 1x81",
        "8x27 2x81",
        "5x81"]
    assert fidelity.table([fidelity.successive_halving(81, 3)]) == ["81x1 27x3 9x9 3x27 1x81"]
    # min_epochs is the smallest rung: R / min_epochs = 27 gives s_max = 3
    assert fidelity.table(fidelity.hyperband(81, 3, min_epochs=3))[0] == "27x3 9x9 3x27 1x81"
    # epochs that are not powers of eta round to whole epochs
    assert fidelity.table(fidelity.hyperband(30, 3))[0] == "27x1 9x3 3x10 1x30"


@pytest.mark.parametrize("eta, min_epochs, epochs, match", [
    (1, 1, 9, "eta=1: must be an integer >= 2"),
    (3, 10, 9, "min_epochs=10 is more than train.epochs=9")])
def test_bad_eta_or_min_epochs_is_a_clear_error(eta, min_epochs, epochs, match):
    with pytest.raises(ValueError, match=match):
        fidelity.hyperband(epochs, eta, min_epochs)


LRS = [0.3, 0.1, 0.03, 0.01]
# Every test here (and in test_pbt.py) trains this program family (iris, SGD, 4 epochs), so the
# populations of 4, 2 and 1 members compile once for all of them: this file's tests run on one
# pytest worker (and `bracket_run` once).
pytestmark = pytest.mark.xdist_group("fidelity")
SMALL = ["data=iris", "optimizer=sgd", "train.epochs=4", "train.batch_size=16",
         "train.early_stopping.patience=null", "model.width=16"]


@pytest.fixture(scope="module")
def bracket_run():
    """4 configurations of iris at 4 epochs, successive halving with eta 2: 4x1 2x2 1x4; the
    same 4 trained in full, for comparison."""
    cfgs = [compose_config([*SMALL, f"optimizer.lr={lr}"]) for lr in LRS]
    full = train_trials(cfgs)
    rungs = fidelity.successive_halving(4, 2)
    assert fidelity.table([rungs]) == ["4x1 2x2 1x4"]
    stopper = fidelity.SuccessiveHalving([r.epochs for r in rungs], 2, "max")
    rows = []
    count = CompileStats.count
    halved = train_trials(cfgs, scheduler=stopper,
                          on_epoch=lambda k, row: rows.append((k, row)))
    return full, halved, stopper, rows, CompileStats.count - count


def test_successive_halving_trains_each_trial_to_its_rung_and_no_further(bracket_run):
    full, halved, stopper, rows, _ = bracket_run
    epochs = sorted(o.result.epochs_run for o in halved)
    assert epochs == [1, 1, 2, 4]
    # epochs trained = the sum over trials of the rung each stopped at, counted epoch by epoch
    assert len(rows) == sum(epochs) == 2 * 1 + 1 * 2 + 4
    assert stopper.promoted == [(1, 4, 2), (2, 2, 1)]
    statuses = [o.result.status for o in halved]
    assert statuses.count("pruned") == 3 and statuses.count("ok") == 1
    # the promoted at the first rung are the best by val/accuracy at the best epoch (= 1)
    first = [o.rows[0]["val/accuracy"] for o in full]
    survivors = [i for i, o in enumerate(halved) if o.result.epochs_run >= 2]
    assert min(first[i] for i in survivors) >= sorted(first)[-2]


def test_survivors_continue_from_their_state(bracket_run):
    """A promoted trial's epochs are those of the same trial trained without stopping:
    parameters, optimizer state, PRNG and the best-epoch tracker carried over, in a
    population gathered down from 4 slots to 2 and then 1."""
    full, halved, _, _, compiles = bracket_run
    for f, h in zip(full, halved, strict=True):
        n = h.result.epochs_run
        for a, b in zip(f.rows[:n], h.rows, strict=True):
            assert b["val/loss"] == pytest.approx(a["val/loss"], rel=1e-4, abs=1e-6)
            assert b["lr"] == pytest.approx(a["lr"], rel=1e-6)  # the schedule spans 4 epochs
        if h.result.status == "ok":
            assert h.result.best_epoch == f.result.best_epoch
            assert h.result.objective == pytest.approx(f.result.objective, abs=1e-6)
            assert h.result.test["test/accuracy"] == pytest.approx(
                f.result.test["test/accuracy"], abs=1e-6)
        else:  # a pruned trial keeps its objective and test metrics at its best epoch so far
            best = min(f.rows[:n], key=lambda r: r["val/loss"])  # early_stopping.monitor
            assert h.result.best_epoch == best["epoch"]
            assert h.result.objective == pytest.approx(best["val/accuracy"], abs=1e-6)
            assert h.result.test["test/accuracy"] is not None
    # each population size (16, 4, 1) compiles its epoch and evaluation programs once
    print("COMPILES", compiles)
    assert compiles <= 3 * 4


def test_a_bracket_that_dies_resumes_from_its_checkpoints(bracket_run, tmp_path):
    """The bracket above with `train.checkpoint_every=1`, killed during epoch 4 (after the
    third epoch's checkpoints) and run again on its job directories, as a requeued SLURM job
    is: it trains epoch 4 only, the trials pruned before (gone from the population) are
    restored from their last checkpoint, and every result equals the uninterrupted run's."""
    _, halved, _, _, _ = bracket_run
    cfgs = [compose_config([*SMALL, f"optimizer.lr={lr}", "train.checkpoint_every=1"])
            for lr in LRS]
    dirs = [str(tmp_path / str(i)) for i in range(len(cfgs))]

    class Killed(Exception):
        pass

    def killed_at_4(report):
        if report.epoch == 4:
            raise Killed

    with pytest.raises(Killed):
        train_trials(cfgs, scheduler=fidelity.SuccessiveHalving([1, 2, 4], 2, "max"),
                     output_dirs=dirs, on_progress=killed_at_4)
    epochs = []
    resumed = train_trials(cfgs, scheduler=fidelity.SuccessiveHalving([1, 2, 4], 2, "max"),
                           output_dirs=dirs, on_progress=lambda r: epochs.append(r.epoch))
    assert epochs == [4]  # one epoch trained, by the one trial left
    for r, h in zip(resumed, halved, strict=True):
        assert (r.result.status, r.result.epochs_run, r.result.best_epoch) == (
            h.result.status, h.result.epochs_run, h.result.best_epoch)
        assert r.result.resumed_from_epoch == 3
        assert [row["val/loss"] for row in r.rows] == pytest.approx(
            [row["val/loss"] for row in h.rows], rel=1e-5)
        assert r.result.objective == pytest.approx(h.result.objective, rel=1e-5)
        assert r.result.test == pytest.approx(h.result.test, rel=1e-5)


TINY = [*SMALL, "hydra/sweeper=hpjax", "optimizer.lr=tag(log, interval(1e-3, 0.3))",
        "model.dropout=interval(0, 0.3)"]


def test_hyperband_sweep_prunes_in_the_study_and_reports_every_epoch(tmp_path):
    """R = 4, eta = 2: brackets 4x1 2x2 1x4; 3x2 1x4; 3x4, ten trials from the sampler.
    Stopped trials are PRUNED in the study with their learning curves, `pruned` in result.json
    and the table; the others COMPLETE."""
    import json

    from optuna.trial import TrialState

    from helpers import multirun, read_summary, trials_in

    sweep = tmp_path / "hb"
    hyperband = [*TINY, "hydra.sweeper.algorithm=hyperband", "hydra.sweeper.n_trials=null",
                 "hydra.sweeper.eta=2"]
    with logged("hpjax") as lines:
        multirun(hyperband, sweep)
    # the log says per rung how many went on
    assert [line for line in lines if " rung " in line] == [
        "[bracket 1: 4x1 2x2 1x4] rung 1 (epoch 1): 4 trials, 2 promoted",
        "[bracket 1: 4x1 2x2 1x4] rung 2 (epoch 2): 2 trials, 1 promoted",
        "[bracket 2: 3x2 1x4] rung 1 (epoch 2): 3 trials, 1 promoted"]
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    assert [t.user_attrs["bracket"] for t in trials] == [0] * 4 + [1] * 3 + [2] * 3
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert sorted(len(t.intermediate_values) for t in pruned) == [1, 1, 2, 2, 2]
    epochs, reasons = 0, []
    for t in trials:
        result = json.loads((sweep / str(t.number) / "result.json").read_text())
        rows = (sweep / str(t.number) / "metrics.jsonl").read_text().splitlines()
        epochs += len(rows)
        assert sorted(t.intermediate_values) == list(range(1, result["epochs_run"] + 1))
        assert t.intermediate_values[1] == pytest.approx(json.loads(rows[0])["val/accuracy"])
        if t.state == TrialState.PRUNED:
            assert result["status"] == "pruned" and result["epochs_run"] < 4
            assert t.value == t.intermediate_values[result["epochs_run"]]  # the last reported
            assert t.user_attrs["status"] == "pruned"
            # the bracket's Stop: where and why, in result.json and the study
            assert result["stopped"]["epoch"] == result["epochs_run"]
            assert t.user_attrs["stopped"] == result["stopped"]
            reasons.append((t.user_attrs["bracket"], result["stopped"]["reason"]))
        else:
            assert t.state == TrialState.COMPLETE
            assert result["status"] == "ok" and result["epochs_run"] == 4
            assert t.value == pytest.approx(result["objective"])
            assert result["stopped"] is None and "stopped" not in t.user_attrs
    assert sorted(reasons) == [(0, "rung 1 (epoch 1): not among the 2 best of 4")] * 2 + [
        (0, "rung 2 (epoch 2): not among the 1 best of 2")] + [
        (1, "rung 1 (epoch 2): not among the 1 best of 3")] * 2
    assert epochs == (2 * 1 + 1 * 2 + 4) + (2 * 2 + 4) + 3 * 4
    summary = read_summary(sweep)
    assert sorted(r["status"] for r in summary) == ["ok"] * 5 + ["pruned"] * 5
    for row in summary:  # summary.csv says how each ended, as the table does
        assert row["ended"] == ("ok" if row["status"] == "ok"
                                else f"pruned at epoch {row['epochs_run']}")
    # report.html's population timeline labels each bracket's population with its rungs
    from hpjax.report.html import timeline_figure
    from hpjax.report.trials import read_trials

    labels = list(dict.fromkeys(timeline_figure(read_trials(sweep)).data[0].y))
    assert [label.split("(", 1)[1] for label in labels] == [
        "4 trials, rungs 4x1 2x2 1x4)", "3 trials, rungs 3x2 1x4)", "3 trials)"]
    best = min(summary, key=lambda r: int(r["rank"] or 99))
    assert best["status"] == "ok"
    # run again: nothing left to train, and n_trials=null is the brackets' 10 in the log
    with logged("hydra_plugins.hpjax_sweeper._impl") as lines:
        multirun(hyperband, sweep)
    assert "resuming: 10 of 10 trials already finished" in lines
    assert any(line.startswith("search space: ") and ", 10 trials (hyperband)" in line
               for line in lines)
    assert len(trials_in(sweep)) == 10


@pytest.mark.parametrize("overrides, match", [
    (["hydra.sweeper.algorithm=sha", "hydra.sweeper.eta=1"], "eta=1: must be an integer >= 2"),
    (["hydra.sweeper.algorithm=hyperband", "hydra.sweeper.min_epochs=5", "train.epochs=3"],
     "min_epochs=5 is more than train.epochs=3"),
    (["hydra.sweeper.algorithm=grid", "hydra.sweeper.pruner=median", "activation=relu,tanh"],
     "a grid runs every point to the end"),
    (["hydra.sweeper.algorithm=sha", "hydra/launcher=basic"], "needs hydra/launcher=vmap"),
    (["hydra.sweeper.algorithm=random", "hydra.sweeper.pruner=bogus"],
     "pruner='bogus': must be one of none, asha"),
    (["hydra.sweeper.algorithm=sha", "train.epochs=3,9"], "train.epochs is the maximum resource")])
def test_bad_multi_fidelity_input_fails_before_anything_trains(tmp_path, overrides, match):
    from helpers import multirun

    with pytest.raises(SystemExit) as info:  # one line, exit 2 (hpjax.errors)
        multirun([*TINY, "train.epochs=3", *overrides], tmp_path / "bad")
    assert match in str(info.value) + str(info.value.__cause__)
    assert not list((tmp_path / "bad").glob("*/result.json"))


def test_asha_pruner_freezes_members_as_optunas_rule_says(tmp_path):
    """`pruner=asha` with a random sampler: every member reports val/loss each epoch, and
    Optuna's SuccessiveHalvingPruner (min_resource 1, eta 3) decides at epoch 1 in trial order
    (asynchronous: a trial competes with those that reached the rung before it), and at 3."""
    from optuna.trial import TrialState

    from helpers import multirun, trials_in

    sweep = tmp_path / "asha"
    multirun([*TINY, "hydra.sweeper.algorithm=random", "hydra.sweeper.pruner=asha",
              "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=4",
              "objective.metric=val/loss", "objective.mode=min"], sweep)
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    seen, expected = [], []
    for t in trials:
        seen.append(t.intermediate_values[1])
        keep = max(len(seen) // 3, 1)
        expected.append(t.intermediate_values[1] <= sorted(seen)[keep - 1])
    assert expected.count(False) >= 1
    for t, promoted in zip(trials, expected, strict=True):
        # rung 0 at epoch 1, rung 1 at epoch 3 (1 x 3): a trial stops at 1, 3, or runs all 4
        epochs = len(t.intermediate_values)
        if promoted:
            assert (t.state, epochs) in ((TrialState.COMPLETE, 4), (TrialState.PRUNED, 3))
        else:
            assert (t.state, epochs) == (TrialState.PRUNED, 1)
        status = "ok" if t.state == TrialState.COMPLETE else "pruned"
        assert hpjax_status(sweep / str(t.number))[:2] == (status, epochs)
        # the pruner's Stop: where and why, in result.json and the study
        stopped = None if promoted and epochs == 4 else {
            "epoch": epochs, "reason": f"Optuna's SuccessiveHalvingPruner at epoch {epochs}"}
        assert hpjax_status(sweep / str(t.number))[2] == t.user_attrs.get("stopped") == stopped


def hpjax_status(job_dir):
    import json

    result = json.loads((job_dir / "result.json").read_text())
    return result["status"], result["epochs_run"], result["stopped"]


@pytest.mark.usefixtures("unset_version_base")
def test_a_bracket_runs_as_one_submitit_job_with_the_vmap_launchers_results(
        tmp_path, jobs_share_the_cache):
    """With hpjax's submitit launchers (hpjax_slurm; here its local twin) a bracket is one
    submitted job that applies the rule inside its population; the driver tells the study. Its
    trials are the vmap launcher's, number for number; submitit's pickles, which hold the whole
    config, are the user's only."""
    import json
    import stat

    from optuna.trial import TrialState

    from helpers import multirun, trials_in

    sweep = tmp_path / "sha"
    sha = [*TINY, "hydra.sweeper.algorithm=sha", "hydra.sweeper.eta=2",
           "hydra.sweeper.n_trials=null"]
    multirun([*sha, "hydra/launcher=hpjax_submitit_local", "hydra.launcher.poll_s=0.2"], sweep)
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 1
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    # 4x1 2x2 1x4: the learning curves recorded from metrics.jsonl when the driver tells
    assert sorted(len(t.intermediate_values) for t in trials
                  if t.state == TrialState.PRUNED) == [1, 1, 2]
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1
    for t in trials:  # the rule's Stop, from result.json (the rule ran in the submitted job)
        if t.state == TrialState.PRUNED:
            e = len(t.intermediate_values)
            assert t.user_attrs["stopped"] == {"epoch": e, "reason": (
                "rung 1 (epoch 1): not among the 2 best of 4" if e == 1
                else "rung 2 (epoch 2): not among the 1 best of 2")}
    # the same bracket through the vmap launcher, in this process: the same trials, bit for bit
    multirun([*sha, "hydra/launcher=vmap"], tmp_path / "vmap")
    vmap = sorted(trials_in(tmp_path / "vmap"), key=lambda t: t.number)
    assert [(t.params, t.state, t.value) for t in trials] == [
        (t.params, t.state, t.value) for t in vmap]
    for t in trials:
        job, ref = (json.loads((d / str(t.number) / "result.json").read_text())
                    for d in (sweep, tmp_path / "vmap"))
        assert job["launcher"] == "hpjax_submitit_local (population)"
        assert (job["status"], job["epochs_run"], job["objective"], job["test"]) == (
            ref["status"], ref["epochs_run"], ref["objective"], ref["test"])
    pickles = list(sweep.rglob("*.pkl"))
    assert pickles and {stat.S_IMODE(p.stat().st_mode) for p in pickles} == {0o600}


def test_a_bracket_split_by_a_static_key_halves_as_one(tmp_path):
    """A rung decides once every trial of the bracket reached it, whatever population (width)
    or chunk it trains in: the epochs run are the bracket table's exactly."""
    from helpers import BRACKETS_4, STATIC, epochs_run, multirun, trials_in

    sweep = tmp_path / "static"
    with logged("hpjax") as lines:
        multirun(STATIC, sweep)
    assert epochs_run(sweep) == BRACKETS_4
    widths = {int(t.params["model.width"]) for t in trials_in(sweep)
              if t.user_attrs["bracket"] == 0}
    assert widths == {4, 8}  # the first bracket trains as two populations at least
    assert [line.split("] ", 1)[1] for line in lines if " rung " in line] == [
        "rung 1 (epoch 1): 4 trials, 2 promoted", "rung 2 (epoch 2): 2 trials, 1 promoted",
        "rung 1 (epoch 2): 3 trials, 1 promoted"]
