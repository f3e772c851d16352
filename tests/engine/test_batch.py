"""A launcher's batch: populations by signature, chunks by size and memory, failures contained."""

import pytest

from helpers import SMALL_MLP, compose_config, sgd_configs
from hpjax.engine import batch, jobs
from hpjax.engine.progress import SweepProgress


def job_list(cfgs):
    return [batch.Job(c, "", name=f"trial {i}") for i, c in enumerate(cfgs)]


def test_out_of_memory_splits_the_chunk_and_loses_nothing():
    sizes = []

    def tight_memory(cfgs, **kw):
        sizes.append(len(cfgs))
        if len(cfgs) > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return jobs.TrialsTraining(cfgs, **kw)

    ends = batch.train_jobs(job_list(sgd_configs([0.1, 0.05, 0.02, 0.01, 0.3], SMALL_MLP)),
                            max_population=8,
                            memory_budget_mb=None, train=tight_memory)
    assert sizes == [5, 2, 3, 1, 2]
    assert all(e.outcome.result.status == "ok" for e in ends)
    assert len({e.outcome.result.objective for e in ends}) > 1  # each job got its own member


def test_a_crashing_population_fails_its_jobs_not_the_sweep():
    sizes = []

    def crash(cfgs, **kw):
        sizes.append(len(cfgs))
        raise ValueError("boom")

    ends = batch.train_jobs(job_list(sgd_configs([0.1, 0.05])), train=crash,
                            progress=SweepProgress(live=False))
    assert sizes == [2, 1, 1]  # halved down to single trials, each failing on its own
    assert [repr(e.error) for e in ends] == ["ValueError('boom')"] * 2
    assert all(e.outcome is None and e.crash is None for e in ends)


def test_plan_groups_by_signature_and_chunks_by_size():
    cfgs = [compose_config([f"model.width={w}", f"optimizer={o}"])
            for w in (16, 32) for o in ("adam", "sgd")] * 2
    planned = batch.plan(cfgs + [None], max_population=1, memory_budget_mb=None)
    assert planned == [[[0], [4]], [[1], [5]], [[2], [6]], [[3], [7]]]
    assert batch.plan(cfgs, max_population=64, memory_budget_mb=None) == [
        [[0, 4]], [[1, 5]], [[2, 6]], [[3, 7]]]
    with pytest.raises(ValueError, match="max_population=0: must be >= 1"):
        batch.plan(cfgs, max_population=0)


def test_memory_estimate_caps_the_chunk(monkeypatch):
    big = [compose_config(["model.width=1024"])]
    # estimated once per signature and data shape, not again for every batch
    traced = []
    estimate = batch._member_bytes
    monkeypatch.setattr(batch, "_MEMBER_BYTES", {})
    monkeypatch.setattr(batch, "_member_bytes", lambda *a: traced.append(1) or estimate(*a))
    # 64x1024 + 1024x1024 + 1024x10 + biases = 1,125,386 parameters: ~40 MiB per member
    size = len(batch.plan(big * 64, max_population=64, memory_budget_mb=64)[0][0])
    assert 1 <= size < 4
    assert len(batch.plan(big * 64, max_population=64, memory_budget_mb=4096)[0][0]) == 64
    assert len(traced) == 1
    # a trial of 4 members (repeats x folds) takes 4 members' room
    four = [compose_config(["train.repeats=2", "data.cv_folds=2"])] * 64
    assert len(batch.plan(four, max_population=64, memory_budget_mb=None)[0][0]) == 16


def test_a_batch_like_the_sweeps_one_before_logs_its_lines_at_debug(tmp_path, caplog,
                                                                    monkeypatch):
    """A sweep of many batches shows its launch lines and epochs once, not for every batch."""
    import logging

    # a terminal handler left on the root logger by an earlier test's Hydra job logging would
    # take the population's end line (SweepProgress prints it there), not the log caplog reads
    monkeypatch.setattr(logging.root, "handlers", [
        h for h in logging.root.handlers if type(h) is not logging.StreamHandler])

    from hpjax.config import ConfigError
    from hpjax.engine.progress import EpochReport

    def one_epoch(cfgs, on_progress, **kw):
        assert kw["pad_to_compiled"]  # a smaller last batch reuses the batches' program
        on_progress(EpochReport(1, 1, len(cfgs), len(cfgs), "val/accuracy", 0.5, 0))
        raise ConfigError("data", "iris", "stops here")  # every job ends, nothing trains

    cfgs = sgd_configs([0.1, 0.05, 0.02])

    def launch(n, sweep="a"):
        caplog.clear()
        job_dirs = [batch.Job(c, str(tmp_path / sweep / str(i)), name=f"trial {i}")
                    for i, c in enumerate(cfgs[:n])]
        batch.train_jobs(job_dirs, train=one_epoch, progress=SweepProgress(live=False))
        return [(r.levelno, r.getMessage()) for r in caplog.records]

    with caplog.at_level(logging.DEBUG, logger="hpjax"):
        first = launch(2)
        assert (logging.INFO, "Launching 2 jobs as 1 population (hydra/launcher=vmap)") in first
        # the terminal gets a population's start and end, not its epochs (populations.log has them)
        assert (logging.INFO, "population 1/1: 2 trials: done after epoch 1, best val/accuracy "
                              "0.5000 (trial 0)") in first
        assert not any("epoch   1/1" in m for lvl, m in first if lvl >= logging.INFO)
        again = launch(2)
        assert [m for lvl, m in again if lvl >= logging.INFO] == []
        assert (logging.DEBUG, "Launching 2 jobs as 1 population (hydra/launcher=vmap)") in again
        assert (logging.DEBUG, "population 1/1: 2 trials: epoch 1/1  2/2 members running  "
                               "best val/accuracy 0.5000 (trial 0)") in again
        assert (logging.DEBUG, "population 1/1: 2 trials: done after epoch 1, best val/accuracy "
                               "0.5000 (trial 0)") in again
        assert (logging.INFO, "Launching 3 jobs as 1 population (hydra/launcher=vmap)") in launch(3)
        assert (logging.INFO, "Launching 3 jobs as 1 population (hydra/launcher=vmap)") in launch(
            3, sweep="b")  # another sweep's first batch
