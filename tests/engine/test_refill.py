"""Refilled populations: a pruned or finished trial's slot takes a new trial at the next epoch."""

import json
import os

import optuna
import pytest

from helpers import child_env, compose_config
from hpjax.engine.compile import CompileStats
from hpjax.engine.jobs import train_trials
from hpjax.engine.schedulers.base import CONTINUE, FullTraining, Stop

# One worker: both tests train the same program family (iris, SGD, 4 epochs, a population of 4
# with a seed row per member) and so compile it once.
pytestmark = pytest.mark.xdist_group("refill")

SMALL = ["data=iris", "optimizer=sgd", "train.epochs=4", "train.batch_size=16",
         "train.early_stopping.patience=null", "model.width=16"]
LRS = [0.3, 0.1, 0.03, 0.01, 0.2, 0.05, 0.02, 0.15, 0.08, 0.04]


class OddAtFirstEpoch(FullTraining):
    """A deterministic scheduler: odd trials stop after their own first epoch; free slots take
    the configs of `queue` (trial ids from 4 on)."""

    refills = True

    def __init__(self, queue):
        self.queue, self.asked, self.next = queue, [], 4

    def on_trial_result(self, trial, result):
        return Stop("odd") if trial % 2 and result.epoch == 1 and not result.last else CONTINUE

    def refill(self, free):
        self.asked.append(free)
        new = [(self.next + i, self.queue.pop(0)) for i in range(min(free, len(self.queue)))]
        self.next += len(new)
        return new


@pytest.fixture(scope="module")
def refilled():
    """10 trials (own seeds, dropout: each member draws its own noise) through a population
    of 4; the compiles counted after each epoch."""
    cfgs = [compose_config([*SMALL, f"optimizer.lr={lr}", f"train.seed={i}",
                            "model.dropout=0.2"]) for i, lr in enumerate(LRS)]
    scheduler = OddAtFirstEpoch(list(cfgs[4:]))
    CompileStats.install()
    count, compiles = CompileStats.count, []
    out = train_trials(cfgs[:4], scheduler=scheduler,
                       on_progress=lambda r: compiles.append(CompileStats.count - count))
    return cfgs, out, scheduler.asked, compiles


def test_slots_are_refilled_until_the_trials_run_out_and_compile_nothing_new(refilled):
    cfgs, out, asked, compiles = refilled
    assert [(o.result.status, o.result.epochs_run) for o in out] == [
        ("ok", 4), ("pruned", 1)] * 5
    # free slots asked for after each epoch: 1 and 3 pruned (epoch 1: trials 4, 5 join); 5
    # pruned (epoch 2: 6); 0 and 2 done (epoch 4: 7, 8); 7 pruned and 4 done (epoch 5: 9, the
    # last: fewer than asked, so no more asks)
    assert asked == [2, 1, 2, 2]
    # epoch by epoch: 4 + 2 + 2 + 2 + ... slots busy until the queue is empty; the epochs
    # trained equal the sum of each trial's own
    assert sum(o.result.epochs_run for o in out) == 5 * 4 + 5 * 1
    # every program the refills use exists after the first refill (epoch 2); only the
    # smaller populations gathered once no trial is left compile theirs
    first_refill = compiles[1]
    shrinking = next(i for i, c in enumerate(compiles) if c > first_refill)
    assert shrinking >= 5 and compiles[1:shrinking] == [first_refill] * (shrinking - 1)


def test_a_refilled_trial_equals_the_same_trial_run_alone(refilled):
    """Trial 6 joins at epoch 2 in a freed slot, from its own fresh state, while the others
    go on: its learning curve and test metrics equal it trained on its own."""
    cfgs, out, _, _ = refilled
    for k in (6, 8):
        alone = train_trials([cfgs[k]])[0]
        assert len(out[k].rows) == 4
        for a, b in zip(out[k].rows, alone.rows, strict=True):
            for key in ("train/loss", "val/loss", "val/accuracy", "lr"):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (k, key)
        assert out[k].result.test == pytest.approx(alone.result.test, rel=1e-5)


class OddTrialsPruner(optuna.pruners.BasePruner):
    """Prunes odd-numbered trials at their first epoch: deterministic, for the sweep test."""

    def prune(self, study, trial):
        return trial.number % 2 == 1 and trial.last_step == 1


def test_a_pruned_sweep_keeps_its_population_full_and_ends_exactly_n_trials(tmp_path):
    """pruner + vmap launcher: 10 trials in batches of 4 are one population of 4 whose
    pruned slots take new trials from the sampler; the study ends with exactly 10 trials,
    PRUNED or COMPLETE, each with its job directory and learning curve."""
    from optuna.trial import TrialState

    from helpers import multirun, trials_in

    sweep = tmp_path / "refill"
    multirun([*SMALL, "hydra/sweeper=hpjax", "optimizer.lr=tag(log, interval(1e-3, 0.3))",
              "model.dropout=interval(0, 0.3)", "hydra.sweeper.algorithm=random",
              "hydra.sweeper.n_trials=10", "hydra.sweeper.batch_size=4",
              "hydra.sweeper.pruner={_target_: test_refill.OddTrialsPruner}"], sweep)
    trials = sorted(trials_in(sweep), key=lambda t: t.number)
    assert [t.number for t in trials] == list(range(10))
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED] * 5
    for t in trials:
        result = json.loads((sweep / str(t.number) / "result.json").read_text())
        epochs = 1 if t.number % 2 else 4
        assert (result["status"], result["epochs_run"]) == ("ok" if epochs == 4 else "pruned",
                                                             epochs)
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
    # one population: every trial ran in the batch's population, refilled trials included
    populations = {(p["start"], p["label"]) for p in (json.loads(
        (sweep / str(t.number) / "result.json").read_text())["population"] for t in trials)}
    assert len(populations) == 1
    joined = {t.number: json.loads((sweep / str(t.number) / "result.json").read_text())[
        "population"].get("joined_epoch") for t in trials}
    assert joined == {0: None, 1: None, 2: None, 3: None, 4: 1, 5: 1, 6: 2, 7: 4, 8: 4, 9: 5}
    # each trial is told as it leaves its slot, so the sampler learns from it at once: pruned
    # trial 1 (epoch 1) before trial 0 (4 epochs), and trial 0 before trial 4 (epochs 2-5)
    done = {t.number: t.datetime_complete for t in trials}
    assert done[1] < done[3] < done[0] < done[2] < done[4]


def test_two_drivers_with_a_pruner_end_exactly_n_trials_pruned_ones_pruned(tmp_path):
    """Two `hpjax -m` processes on one SQLite study, each refilling its population from the
    sampler: together exactly n_trials distinct trials, each run once; odd ones PRUNED."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from optuna.trial import TrialState

    from helpers import run_main, trials_in

    args = ["-m", *SMALL, "train.epochs=2", "hydra/sweeper=hpjax",
            "optimizer.lr=tag(log, interval(1e-3, 0.3))", "hydra.sweeper.algorithm=random",
            "hydra.sweeper.n_trials=8", "hydra.sweeper.batch_size=2", "hydra.sweeper.poll_s=0.2",
            "hydra.sweeper.pruner={_target_: test_refill.OddTrialsPruner}",
            # without heartbeats a worker must not fail the other's running trials
            "hydra.sweeper.fail_stale_trials=false", "hydra.sweep.dir=sweep"]
    exe = str(Path(sys.executable).parent / "hpjax")
    here = Path(__file__).resolve().parent  # test_refill.OddTrialsPruner and its conftest
    env = child_env({"PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])})
    # one driver a process, the other this one (its imports and compiles are paid already)
    worker = subprocess.Popen([exe, *args], cwd=tmp_path, stdout=subprocess.PIPE, env=env,
                              stderr=subprocess.STDOUT, text=True)
    here = run_main(args, tmp_path)
    outputs = [worker.communicate(timeout=300)[0], here.stdout + here.stderr]
    assert [worker.returncode, here.returncode] == [0, 0], outputs
    trials = sorted(trials_in(tmp_path / "sweep"), key=lambda t: t.number)
    assert [t.number for t in trials] == list(range(8))
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED] * 4
    assert [len(t.intermediate_values) for t in trials] == [2, 1] * 4
    ran = sorted(int(n) for out in outputs for n in re.findall(r"#(\d+) : ", out))
    assert ran == list(range(8))  # each trial ran once, in one of the two drivers
