"""Full disks (issue 26), on a real small file system (a 4 MB tmpfs, mounted as root here and in
CI; where none can be mounted, `helpers.small_fs` simulates it by injecting the errno into each
write under it, and the same assertions run): a disk that fills up under a sweep fails the
write's trial (its result, its checkpoint, its params.msgpack), or stops the sweep where the
study is written, with one line and exit code 5; every finished trial's files are kept, and the
same command again, once there is room, resumes and completes."""

import json
import os

import optuna
import pytest
from hydra._internal.utils import run_and_report

from helpers import fill_disk, multirun, small_fs
from hpjax.cli import sweep_argv
from hpjax.engine import checkpoint

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
    with small_fs(disk):
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
    with small_fs(disk):
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


DISK_LINE = (": 1 trial could not write their files and will run again; the sweep stopped, "
             "every finished trial's files are kept: free space (or make it writable) and run "
             "the same command again: it resumes")


@pytest.mark.parametrize("write, extra", [
    ("save", ["train.checkpoint_every=1"]),  # an Orbax checkpoint, every epoch
    ("save_params", []),  # params.msgpack, the best epoch's variables, as the trial ends
])
def test_a_full_disk_under_a_checkpoint_or_params_fails_that_trial_and_a_rerun_completes(
        tmp_path, monkeypatch, write, extra):
    """The disk fills up just as trial 1 writes its checkpoint (or its params.msgpack): that
    trial fails with the error naming its file and will run again, the sweep stops (exit 5),
    trial 0's files are kept byte for byte; the same command, once there is room, completes."""
    disk, storage = tmp_path / "disk", f"sqlite:///{tmp_path / 'study.db'}"
    args = [*TINY, *extra, "hydra.sweeper.batch_size=1", f"hydra.sweeper.storage={storage}"]
    trial_1 = disk / "s" / "1"
    with small_fs(disk), monkeypatch.context() as patch:
        real = getattr(checkpoint, write)

        def filling(first, *a, **kw):  # the disk fills up as trial 1 starts this write
            target = first if write == "save" else first[0][0]
            if str(target).startswith(f"{trial_1}{os.sep}"):
                fill_disk(disk)
            return real(first, *a, **kw)

        patch.setattr(checkpoint, write, filling)
        code, line = hpjax_m(args, disk / "s")
        assert code == 5, line
        assert line.startswith("hpjax: error: ") and line.endswith(DISK_LINE), line
        assert "No space left on device" in line and str(trial_1) in line, line
        kept = {p: p.read_bytes() for p in (disk / "s" / "0").rglob("*")
                if p.is_file() and p.suffix != ".log"}
        assert disk / "s" / "0" / "result.json" in kept
        assert any(p.name == ("params.msgpack" if write == "save_params" else "_METADATA")
                   for p in kept), sorted(kept)  # what trial 0 wrote of the same kind
        first = trials(storage)
        assert [(t.state.name, t.user_attrs.get("status")) for t in first] == [
            ("COMPLETE", "ok"), ("FAIL", "disk"), ("WAITING", None)]
        (disk / "filler").unlink()  # space freed
        code, line = hpjax_m(args, disk / "s")
        assert code == 0, line
        again = trials(storage)
        assert [(t.state.name, t.user_attrs.get("status")) for t in again] == [
            ("COMPLETE", "ok"), ("FAIL", "disk"), ("COMPLETE", "ok")]
        assert again[2].params == first[1].params  # trial 1's parameters, run again
        assert {p: p.read_bytes() for p in kept} == kept
        assert json.loads((disk / "s" / "2" / "result.json").read_text())["status"] == "ok"
        if write == "save_params":
            assert (disk / "s" / "2" / "params.msgpack").is_file()


def test_the_report_command_on_a_full_disk_says_so_in_one_line(tmp_path, capsys):
    """`python -m hpjax.report <sweep_dir>` where summary.csv cannot be written: one line and
    exit code 5, the trial's files untouched; once there is room it writes the report."""
    from hpjax.report import main as report_main
    from hpjax.results import Result

    disk = tmp_path / "disk"
    with small_fs(disk, size_kb=256):
        job = disk / "s" / "0"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.1\n")
        Result("ok", 0.9, "val/accuracy", "max", best={"val/accuracy": 0.9}).write(job)
        before = (job / "result.json").read_bytes()
        fill_disk(disk)
        assert report_main([str(disk / "s"), "--no-html"]) == 5
        err = capsys.readouterr().err
        assert err.splitlines() == [f"hpjax.report: error: OSError: No space left on device "
                                    f"({disk / 's' / 'summary.csv'}): free space (or make it "
                                    "writable) and run it again"], err
        assert (job / "result.json").read_bytes() == before
        (disk / "filler").unlink()
        assert report_main([str(disk / "s"), "--no-html"]) == 0
        assert (disk / "s" / "summary.csv").is_file()


def test_a_save_cut_short_is_left_to_the_next_save_and_reading_deletes_nothing_behind(tmp_path):
    """A checkpoint folder holding the tmp folder of a save cut short (a full disk, a kill), as
    a retried trial's copy of it holds it: reading the folder leaves it as it was, with no
    thread still deleting when the caller clears the folder or moves it aside (that race failed
    the retried trial with FileNotFoundError); the next save removes it, then writes."""
    import threading

    import numpy as np

    folder = tmp_path / "checkpoints"
    cut = folder / "1.orbax-checkpoint-tmp"
    (cut / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    (cut / "state.orbax-checkpoint-tmp" / "d").write_bytes(b"\0" * 64)
    before = set(threading.enumerate())
    assert checkpoint.resume_epoch([str(folder)]) == (None, [])  # nothing to resume from
    for thread in set(threading.enumerate()) - before:  # what reading left running ends
        thread.join(timeout=30)
    assert (cut / "state.orbax-checkpoint-tmp" / "d").read_bytes() == b"\0" * 64
    checkpoint.save(str(folder), 1, {"w": np.ones(3, np.float32)}, {"epoch": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["1"]
    assert checkpoint.all_epochs(str(folder)) == [1]
