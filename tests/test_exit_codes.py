"""Exit codes that tell the truth (issue 26): 0 when the sweep ran, 3 when some trials failed
with an error, 4 when every one did (the error said once, with its count), 2 for a user error
before anything ran; `hpjax.sweep` raises `SweepError` or returns a `Sweep` that says so."""

from pathlib import Path

import pytest

from helpers import run_main
from hpjax.api import sweep
from hpjax.engine import batch
from hpjax.errors import SweepError
from hpjax.report.summary import verdict
from hpjax.report.trials import Trial
from hpjax.results import Result

TINY = ["data=iris", "model.width=8", "train.epochs=2", "train.early_stopping.patience=null"]
SEVEN = "FloatingPointError: the program broke on seed 7"


def test_every_trial_failing_exits_4_with_its_error_once(tmp_path, monkeypatch):
    """The command as a script or CI runs it (its entry point, `hpjax.app.main`, in this
    process), every trial's program broken (injected as in test_faults: the programs a real
    sweep breaks on are bugs that get fixed)."""
    def broken(cfgs, **kw):
        raise FloatingPointError("the program broke [on purpose]")

    monkeypatch.setitem(batch.train_jobs.__kwdefaults__, "train", broken)
    out = run_main(["-m", "hydra/sweeper=hpjax", *TINY, "hydra.sweeper.n_trials=3",
                    "hydra.sweeper.batch_size=3", "optimizer.lr=0.01,0.02",
                    "hydra.sweep.dir=s"], tmp_path)
    error = "FloatingPointError: the program broke [on purpose]"
    assert out.returncode == 4, out.stdout + out.stderr
    assert out.stderr.splitlines()[-1] == f"hpjax: error: all 3 trials failed: {error} (3 trials)"
    assert f"3 trials failed: {error} (trials 0, 1, 2)" in out.stdout  # once, not 3 lines
    assert "Traceback" not in out.stdout + out.stderr


def test_some_failed_trials_are_exit_code_3_and_the_sweep_says_how_many(tmp_path, capsys,
                                                                        breaks_on_seed_7):
    """A grid of four: two fail (seed 7), one diverges (an outcome), one is ok."""
    done = sweep([*TINY, "hydra.sweeper.params=null", "train.seed=0,7", "optimizer=sgd",
                  "optimizer.lr=0.1,1e30"], str(tmp_path / "s"))
    assert sorted(r["status"] for r in done.table) == ["diverged", "failed", "failed", "ok"]
    assert (done.failed, done.exit_code) == (2, 3)
    assert done.best is not None and done.best.status == "ok"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"hpjax: 2 of 4 trials failed: {SEVEN} (2 trials); exit code 3")


def test_the_api_raises_for_a_sweep_that_cannot_run_or_whose_every_trial_failed(
        tmp_path, breaks_on_seed_7):
    with pytest.raises(SweepError) as e:
        sweep(["hydra/sweeper=hpjax", *TINY, "optimizer.lr=choice(0.1, -1)"],
              str(tmp_path / "bad"))
    assert e.value.exit_code == 2 and e.value.sweep is None
    assert str(e.value) == "optimizer.lr=-1.0: must be a finite number > 0"
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SweepError) as e:
        sweep([*TINY, "hydra.sweeper.params=null", "train.seed=7"], str(tmp_path / "all"))
    assert e.value.exit_code == 4 and str(e.value) == f"all 1 trial failed: {SEVEN} (1 trial)"
    assert [r["status"] for r in e.value.sweep.table] == ["failed"]
    assert e.value.sweep.failed == 1 and e.value.sweep.best is None


def _trial(job, status, error=None):
    return Trial(job, Path(str(job)), [], Result(status, None, "val/accuracy", "max",
                                                 error=error))


@pytest.mark.parametrize("statuses, code", [
    (["ok", "diverged", "pruned", "interrupted"], 0),  # outcomes: the sweep ran
    (["diverged", "diverged"], 0),
    (["ok", "failed"], 3),
    (["failed", "failed"], 4),
])
def test_diverged_and_pruned_trials_are_outcomes_and_failures_set_the_code(statuses, code):
    trials = [_trial(i, s, "E" if s == "failed" else None) for i, s in enumerate(statuses)]
    assert verdict(trials)[0] == code


def test_the_most_common_error_is_named_with_its_count_and_the_others_counted():
    trials = [_trial(0, "failed", "A"), _trial(1, "failed", "B"), _trial(2, "failed", "B")]
    assert verdict(trials) == (4, "all 3 trials failed: B (2 trials); 1 other error in "
                                  "summary.csv")


def mismatched(features: int = 8, num_classes: int = 3):
    """A model of plain functions whose weights have the wrong shape for the data (9 inputs,
    iris has 4): it fails as its program is first built, for every trial."""
    import jax

    def init(key, x):
        return {"w": jax.random.normal(key, (features + 1, num_classes))}

    def apply(params, x, *, train, key):
        return x.reshape(x.shape[0], -1) @ params["w"]

    return init, apply


def _own_model(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mismatched.yaml").write_text(
        "_target_: test_exit_codes.mismatched\nfeatures: 8\nnum_classes: ${data.num_classes}\n")
    return [f"hydra.searchpath=[file://{tmp_path}/conf]", "model=mismatched"]


def test_a_model_that_fails_as_its_program_is_built_fails_its_trials_not_the_sweep(
        tmp_path, capsys):
    """The engine builds each signature's program before training it (its memory estimate):
    the user's model raising there fails the trials of that signature (it was a traceback and
    exit code 1); here every trial, so one line with the count and exit code 4."""
    error = ("TypeError: dot_general requires contracting dimensions to have the same shape, "
             "got (4,) and (9,).")
    with pytest.raises(SweepError) as e:
        sweep(["data=iris", "train.epochs=2", *_own_model(tmp_path), "hydra.sweeper.params=null",
               "optimizer.lr=0.01,0.02"], str(tmp_path / "s"))
    assert (e.value.exit_code, str(e.value)) == (4, f"all 2 trials failed: {error} (2 trials)")
    assert [r["status"] for r in e.value.sweep.table] == ["failed", "failed"]
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_planning_sets_aside_the_signature_whose_program_cannot_be_built(tmp_path):
    """Of two signatures, the one whose model raises is in no population: its trials end with
    the error (the scheduler told, so no rung waits for them), the other is planned."""
    from helpers import compose_config
    from hpjax.engine.schedulers.base import FullTraining

    bad = compose_config(["data=iris", *_own_model(tmp_path)])
    good = compose_config(TINY)
    failed: dict = {}
    assert batch.plan([bad, good, bad], failed=failed) == [[[1]]]
    assert sorted(failed) == [0, 2] and isinstance(failed[0], TypeError)

    class Told(FullTraining):
        ended: list = []

        def on_trial_complete(self, trial, result):
            self.ended.append((trial, result))

    ends = batch.train_jobs([batch.Job(bad, ""), batch.Job(bad, "")], scheduler=Told(),
                            trials=["a", "b"])
    assert [type(end.error) for end in ends] == [TypeError, TypeError]
    assert Told.ended == [("a", None), ("b", None)]
