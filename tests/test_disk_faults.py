"""Full disks (issue 26), on a real small file system (a 4 MB tmpfs, mounted as root here and in
CI): a disk that fills up under a sweep fails the write's trial, or stops the sweep where the
study is written, with one line and exit code 5; every finished trial's files are kept, and the
same command again, once there is room, resumes and completes."""

import json

import optuna
import pytest
from hydra._internal.utils import run_and_report

from helpers import multirun, small_fs
from hpjax.cli import sweep_argv

TINY = ["hydra/sweeper=hpjax", "data=iris", "model.width=8", "train.epochs=2",
        "hydra.sweeper.n_trials=2", "optimizer.lr=tag(log, interval(1e-3, 1e-1))"]


@pytest.fixture(autouse=True)
def as_the_command(monkeypatch):
    monkeypatch.setattr("logging.raiseExceptions", False)  # as hpjax.app.main() sets it


def hpjax_m(overrides, sweep_dir):
    """`hpjax -m` as the command runs it: (exit code, the line it printed). Not read with
    capsys: Hydra's job logging closes every handler, and absl's handler closes the stream it
    was made with (pytest's own, at collection) when that is not sys.stderr at the time."""
    with pytest.raises(SystemExit) as e:
        run_and_report(lambda: multirun(sweep_argv(["-m", *overrides])[1:], sweep_dir))
        raise SystemExit(0)
    message = getattr(e.value, "message", None)
    return e.value.code, f"hpjax: error: {message}" if message else ""


def fill(disk, job, at):
    return ["+hydra.callbacks.fill._target_=helpers.FillDisk", f"+hydra.callbacks.fill.path={disk}",
            f"+hydra.callbacks.fill.job={job}", f"+hydra.callbacks.fill.at={at}"]


def trials(storage):
    return optuna.load_study(study_name="hpjax", storage=storage).get_trials()


def test_a_trial_that_cannot_write_its_files_runs_again_once_there_is_room(tmp_path):
    """The study on a roomy disk, the sweep directory on a 4 MB one that fills up as trial 1
    starts: trial 1's files fail (ENOSPC), the sweep stops (exit 5) rather than failing every
    trial after it, and the rerun runs trial 1's parameters again."""
    disk, storage = tmp_path / "disk", f"sqlite:///{tmp_path / 'study.db'}"
    args = [*TINY, "hydra.sweeper.batch_size=1", f"hydra.sweeper.storage={storage}"]
    with small_fs(disk) as mounted:
        if not mounted:
            pytest.skip("no tmpfs: not root (under CI, small_fs fails instead)")
        code, line = hpjax_m([*args, *fill(disk, job=1, at="start")], disk / "s")
        assert code == 5, line
        assert line.startswith("hpjax: error: OSError: [Errno 28] No space left on device: "
                               f"'{disk / 's' / '1'}/"), line  # the file it could not write
        assert line.endswith(": 1 trial could not write their files and will run again; the "
                             "sweep stopped, every finished trial's files are kept: free space "
                             "(or make it writable) and run the same command again: it resumes")
        kept = (disk / "s" / "0" / "result.json").read_bytes()
        assert json.loads(kept)["status"] == "ok"
        first = trials(storage)
        assert [(t.state.name, t.user_attrs.get("status")) for t in first] == [
            ("COMPLETE", "ok"), ("FAIL", "disk"), ("WAITING", None)]  # its parameters again
        (disk / "filler").unlink()  # space freed
        code, line = hpjax_m(args, disk / "s")
        assert code == 0, line
        again = trials(storage)
        assert [(t.state.name, t.user_attrs.get("status")) for t in again] == [
            ("COMPLETE", "ok"), ("FAIL", "disk"), ("COMPLETE", "ok")]  # n_trials=2 done
        assert again[2].params == first[1].params  # the same trial, run again
        assert (disk / "s" / "0" / "result.json").read_bytes() == kept
        assert json.loads((disk / "s" / "2" / "result.json").read_text())["status"] == "ok"
        assert not list(disk.glob("s/*/.*.tmp*")) and not list(disk.glob("s/*/*.tmp"))


def test_a_full_disk_under_the_study_stops_the_sweep_and_a_rerun_completes(tmp_path):
    """study.db in the sweep directory on a 4 MB disk that fills up as trial 0 ends: its
    result.json is written, telling the study fails, the sweep stops with one line (exit 5);
    the rerun tells trial 0 from its result.json and runs trial 1."""
    disk = tmp_path / "disk"
    with small_fs(disk) as mounted:
        if not mounted:
            pytest.skip("no tmpfs: not root (under CI, small_fs fails instead)")
        code, line = hpjax_m([*TINY, *fill(disk, job=0, at="end")], disk / "s")
        assert code == 5, line
        assert line == ("hpjax: error: sqlite3.OperationalError: database or disk is full: the "
                        "sweep stopped, every finished trial's files are kept; free space (or "
                        "make it writable) and run the same command again: it resumes")
        kept = (disk / "s" / "0" / "result.json").read_bytes()
        (disk / "filler").unlink()
        code, line = hpjax_m(TINY, disk / "s")
        assert code == 0, line
        done = trials(f"sqlite:///{disk / 's' / 'study.db'}")
        assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"]
        assert (disk / "s" / "0" / "result.json").read_bytes() == kept
        assert done[0].value == json.loads(kept)["objective"]
