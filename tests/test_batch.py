"""A launcher's batch: populations by signature, chunks by size and memory, failures contained."""

import pytest

from conftest import compose_config, sgd_configs
from hpjax import batch, jobs
from hpjax.progress import SweepProgress


def job_list(cfgs):
    return [batch.Job(c, "", name=f"trial {i}") for i, c in enumerate(cfgs)]


def test_out_of_memory_splits_the_chunk_and_loses_nothing():
    sizes = []

    def tight_memory(cfgs, **kw):
        sizes.append(len(cfgs))
        if len(cfgs) > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return jobs.train_trials(cfgs, **kw)

    ends = batch.train_jobs(job_list(sgd_configs([0.1, 0.05, 0.02, 0.01, 0.3])),
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


def test_memory_estimate_caps_the_chunk():
    big = [compose_config(["model.width=1024"])]
    # 64x1024 + 1024x1024 + 1024x10 + biases = 1,125,386 parameters: ~40 MiB per member
    size = len(batch.plan(big * 64, max_population=64, memory_budget_mb=64)[0][0])
    assert 1 <= size < 4
    assert len(batch.plan(big * 64, max_population=64, memory_budget_mb=4096)[0][0]) == 64
    # a trial of 4 members (repeats x folds) takes 4 members' room
    four = [compose_config(["train.repeats=2", "data.cv_folds=2"])] * 64
    assert len(batch.plan(four, max_population=64, memory_budget_mb=None)[0][0]) == 16
