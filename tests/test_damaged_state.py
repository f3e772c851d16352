"""Damaged state (issue 26): a checkpoint cut short (a kill mid-save, a full disk) is set aside,
never overwritten nor mixed into a new run's, and the trial says so and trains from the start.
(A study file that is not a database, or of another tool, and a study of another space or
algorithm: tests/test_user_errors.py.)"""

import logging

import hpjax

RUN = ["data=iris", "model.width=8", "train.epochs=2", "train.checkpoint_every=1",
       "train.early_stopping.patience=null"]


def test_a_checkpoint_cut_short_is_set_aside_and_the_trial_trains_from_the_start(tmp_path,
                                                                                 caplog):
    job = tmp_path / "job"
    first = hpjax.train(RUN, str(job))
    assert first.status == "ok" and first.epochs_run == 2
    saved = [p for p in (job / "checkpoints").rglob("*") if p.is_file() and p.stat().st_size]
    assert saved, "no checkpoint was written"
    for p in saved:  # every file of every checkpoint cut to half its length
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    torn = {p.relative_to(job / "checkpoints"): p.read_bytes() for p in saved}
    with caplog.at_level(logging.WARNING, logger="hpjax"):
        again = hpjax.train(RUN, str(job))
    assert again.status == "ok" and again.epochs_run == 2 and again.resumed_from_epoch is None
    assert again.objective == first.objective  # trained from the start, as the first run
    [line] = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert "moved aside, never overwritten" in line and "training from the start" in line
    aside = [p for p in job.iterdir() if ".damaged" in p.name] + [
        p for p in (job / "checkpoints").iterdir() if ".damaged" in p.name]
    assert aside, list(job.rglob("*"))
    kept = {}
    for folder in aside:
        for p in folder.rglob("*"):
            if p.is_file() and p.stat().st_size:
                kept[p] = p.read_bytes()
    assert sorted(kept.values()) == sorted(torn.values())  # the torn files, as they were
