"""Streamed data (docs/data.md): sources read through Grain a block of batches at a time, shared
by the population; the same numbers whatever the block, the file format or a kill in between;
memory bounded by the buffers; bad input refused in one line before training."""

import dataclasses
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from helpers import child_env, compose_config, killed_in_epoch_3_and_resumed, rows_without_time
from hpjax import data as data_lib
from hpjax.config import ConfigError
from hpjax.config.target import target_config
from hpjax.data.stream import Stream, permute
from hpjax.engine.loop import train_population

SMALL = ["data=iris", "model.width=16", "train.batch_size=16", "train.epochs=3",
         "optimizer.lr=0.03", "train.early_stopping.patience=null"]


def test_a_permutation_per_epoch_of_every_index_once():
    for n in (1, 7, 100, 1000):
        order = permute(np.arange(n), n, seed=3)
        assert sorted(order) == list(range(n))
    assert list(permute(np.arange(100), 100, 3)) != list(permute(np.arange(100), 100, 4))
    assert list(permute(np.arange(20, 30), 100, 3)) == list(permute(np.arange(100), 100, 3))[20:30]


STREAMED = [*SMALL, "data.stream=true", "data.stream_block=4"]


def test_blocks_of_any_size_train_the_same_and_members_share_the_batches():
    """Iris's 105 training samples are 6 steps of 16: blocks of 4 (the second half padding)
    and one block of 8 an epoch give the same numbers; two members of one population, one
    config, see the same batches: the same numbers as each other."""
    cfg = compose_config(STREAMED)
    assert isinstance(data_lib.load(cfg.data), Stream)
    fours = train_population([cfg, cfg])
    eight = compose_config([*SMALL, "data.stream=true", "data.stream_block=8"])
    eights = train_population([eight, eight])[0]  # a population of 2: the fours' programs
    assert rows_without_time(fours[0].rows) == rows_without_time(fours[1].rows)
    for name in ("train/loss", "val/loss"):
        np.testing.assert_allclose([r[name] for r in fours[0].rows],
                                   [r[name] for r in eights.rows], rtol=1e-4)
    assert fours[0].rows[-1]["val/accuracy"] > 0.8
    assert fours[0].result.test["test/loss"] == pytest.approx(eights.result.test["test/loss"],
                                                              rel=1e-4)


def test_a_killed_streamed_run_resumes_with_the_iterators_state(tmp_path):
    """A population of two (learning rates 0.03 and 0.01) killed in epoch 3 resumes from epoch
    2's checkpoints, the Grain iterators set to the state saved in them: the same metrics as the
    run never killed."""
    cfg = compose_config([*STREAMED, "train.checkpoint_every=1"])
    cfgs = [cfg, compose_config([*STREAMED, "train.checkpoint_every=1", "optimizer.lr=0.01"])]
    whole, saved, _ = killed_in_epoch_3_and_resumed(cfgs, tmp_path)
    # after 2 epochs of 2 blocks
    assert any(m.get("data", {}).get("train") == {"next_index": 4} for m in saved)
    assert rows_without_time(whole[0].rows) != rows_without_time(whole[1].rows)


def test_rungs_count_streamed_epochs_and_a_survivor_reads_on_where_it_was():
    """Successive halving on streamed data (2 trials, rungs at 1 and 3 epochs, eta 2): the
    population gathered down to its survivor reads on where the stream was, so each trial's
    epochs are those of the same trial trained in full. (The programs of the tests above.)"""
    from hpjax.engine.jobs import train_trials
    from hpjax.engine.schedulers.halving import SuccessiveHalving

    cfgs = [compose_config([*STREAMED, f"optimizer.lr={lr}"]) for lr in (0.03, 0.003)]
    full = train_trials(cfgs)
    halved = train_trials(cfgs, scheduler=SuccessiveHalving([1, 3], 2, "max"))
    assert sorted(o.result.epochs_run for o in halved) == [1, 3]
    for f, h in zip(full, halved, strict=True):
        assert len(h.rows) == h.result.epochs_run
        for a, b in zip(f.rows, h.rows, strict=False):
            for name in ("train/loss", "val/loss"):
                assert b[name] == pytest.approx(a[name], rel=1e-4)


def folder(tmp_path, kind, n=(400, 100, 100), features=6):
    rng = np.random.default_rng(0)
    write = data_lib.write_npy if kind == "npy" else data_lib.write_array_record
    for split, size in zip(("train", "val", "test"), n, strict=True):
        x = rng.normal(3.0, 2.0, size=(size, features)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] > 6).astype(np.int64) + (x[:, 2] > 3)
        write(str(tmp_path / kind), split, [(x[: size // 2], y[: size // 2]),
                                            (x[size // 2:], y[size // 2:])])
    return str(tmp_path / kind)


def test_npy_and_array_record_folders_stream_the_same_batches(tmp_path):
    common = [*SMALL[1:], "data.num_classes=3", "data.device_mb=0", "train.batch_size=32"]
    npy = compose_config(["data=npy", f"data.path={folder(tmp_path, 'npy')}", *common])
    rec = compose_config(["data=array_record", f"data.path={folder(tmp_path, 'array_record')}",
                          *common])
    streams = [data_lib.load(c.data) for c in (npy, rec)]
    assert all(isinstance(s, Stream) for s in streams)  # larger than data.device_mb=0
    # standardised with the training split's statistics, from one pass over it
    np.testing.assert_allclose(streams[0].mean, streams[1].mean, rtol=1e-6)
    assert streams[0].mean[3] == pytest.approx(3.0, abs=0.3)
    assert streams[0].std[3] == pytest.approx(2.0, abs=0.2)
    for split in ("train", "val"):
        a, b = (s.iterator(split, 32) for s in streams)
        for _ in range(3):  # train: an epoch and a half, reshuffled at the epoch's end
            for u, v in zip(next(a), next(b), strict=True):
                np.testing.assert_array_equal(u, v)
    out = train_population([npy])[0]
    assert out.rows[-1]["val/accuracy"] > 0.7 and out.result.test["test/accuracy"] > 0.7
    # data.device_mb's default: these few kilobytes fit, so they are read into arrays
    assert not isinstance(data_lib.load(dataclasses.replace(npy.data, device_mb=1024)), Stream)


def map_datasets(wrap: bool) -> dict:
    """Splits of random records, as `grain.MapDataset`s (`wrap`) or the sources they map."""
    import grain

    rng, out = np.random.default_rng(0), {}
    for split, n in (("train", 64), ("val", 20), ("test", 20)):
        x = rng.normal(1.0, 2.0, size=(n, 3)).astype(np.float32)
        source = data_lib.sources.ArraySource(x, (x[:, 0] > 1).astype(np.int64))
        out[split] = grain.MapDataset.source(source) if wrap else source
    return out


def test_a_grain_map_dataset_streams_as_the_source_it_maps():
    grain_ds, plain = (data_lib.load(target_config("data", {
        "_target_": "test_stream.map_datasets", "wrap": wrap, "num_classes": 2,
        "stream": True})) for wrap in (True, False))
    np.testing.assert_allclose(grain_ds.mean, plain.mean, rtol=1e-6)
    assert grain_ds.mean[0] == pytest.approx(1.0, abs=0.5)
    a, b = grain_ds.iterator("train", 16), plain.iterator("train", 16)
    for _ in range(2):  # an epoch of 4 steps in blocks of 8 (cut to 4), then the next
        for u, v in zip(next(a), next(b), strict=True):
            np.testing.assert_array_equal(u, v)
    a.close()
    b.close()


def bad(kind: str):
    """A data function returning sources with one thing wrong (`kind`)."""
    x, y = np.zeros((20, 3), np.float32), np.arange(20) % 2
    good = data_lib.sources.ArraySource(x, y)
    splits = {"train": good, "val": good, "test": good}
    if kind == "missing":
        del splits["val"]
    if kind == "no_length":
        splits["test"] = iter([(x[0], 0)])
    if kind == "empty":
        splits["val"] = data_lib.sources.ArraySource(x[:0], y[:0])
    if kind == "shapes":
        splits["test"] = [(x[0], 0), (np.zeros(4, np.float32), 1)]
    if kind == "labels":
        splits["val"] = data_lib.sources.ArraySource(x, y + 1)
    return splits


WHERE = "data._target_='test_stream.bad': "


@pytest.mark.parametrize("kind,message", [
    ("missing", WHERE + "returned splits test, train; streamed data needs train, val and test "
     "(missing: val)"),
    ("no_length", WHERE + "returned a test split without a length: give a random-access source "
     "(__len__ and __getitem__, or a grain.MapDataset), not list_iterator"),
    ("empty", WHERE + "returned an empty val split"),
    ("shapes", WHERE + "returned records of different shapes: test has (4,), train's record 0 "
     "(3,)"),
    ("labels", "data.num_classes=2: labels must be integers in [0, 2); the val split holds "
     "2, 2, 2"),
])
def test_bad_sources_stop_before_training_with_one_line(kind, message):
    cfg = target_config("data", {"_target_": "test_stream.bad", "kind": kind, "num_classes": 2,
                                 "stream": True})
    with pytest.raises(ConfigError) as e:
        data_lib.load(cfg)
    assert str(e.value) == message


def _anon_kb(pid: int) -> int:
    """RssAnon of a process and, recursively, its children (Grain's workers)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
        children = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children += [int(c) for c in f.read().split()]
    except (OSError, StopIteration):
        return 0
    return kb + sum(_anon_kb(c) for c in children)


def peak_anon_mb(fn) -> float:
    """Peak anonymous memory (MB) of this process and its children while `fn` runs, sampled
    every 5 ms."""
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _anon_kb(os.getpid()))
            done.wait(0.005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak[0] / 1024


def train_procedural(n: int) -> float:
    """Trains one epoch on `procedural(n)` through one worker process; returns the peak
    anonymous memory of this process and its worker (MB)."""
    from hpjax.cli import register

    register()  # a fresh process: hpjax's schemas into Hydra's ConfigStore
    base = compose_config(["model.width=8", "train.batch_size=100", "train.eval_batch_size=100",
                           "train.epochs=1", "train.early_stopping.patience=null"])
    data = target_config("data", {"_target_": "procedural.splits", "n": n,
                                  "num_classes": 2, "stream": True, "stream_workers": 1,
                                  "stream_block": 2, "stream_threads": 1})
    out = []
    peak = peak_anon_mb(lambda: out.append(train_population([dataclasses.replace(
        base, data=data)])[0]))
    assert out[0].result.status == "ok" and out[0].result.epochs_run == 1
    return peak


def test_memory_is_bounded_by_the_buffers_not_the_data():
    """Training on 1,000 and on 8,000 records of 16 KB (16 MB, then 128 MB), each in a fresh
    process, through one worker process: the peak anonymous memory of the process and its
    worker grows by less than 50 MB (read whole, the larger set alone would add 112 MB)."""
    def peak(n: int) -> float:
        code = f"import test_stream; print(test_stream.train_procedural({n}))"
        # glibc gives each reading thread a malloc arena whose reserve varies run to run (+17
        # to +32 MB between these two runs uncapped); two arenas leave the data's own growth
        env = child_env({"PYTHONPATH": os.pathsep.join(sys.path), "MALLOC_ARENA_MAX": "2"})
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True)
        return float(out.stdout.split()[-1])

    small, large = peak(1000), peak(8000)
    print(f"peak anonymous memory: {small:.1f} MB at 1,000 records, {large:.1f} MB at 8,000")
    assert large - small < 50, (small, large)


def test_what_a_stream_cannot_serve_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"^data\.stream=True: streams classification data "
                       r"only: task=regression trains on arrays \(set data\.stream=false\)$"):
        data_lib.load(compose_config(["data=diabetes", "task=regression",
                                      "data.stream=true"]).data, regression=True)
    with pytest.raises(ConfigError, match=r"^data\.cv_folds=3: streamed data has its own val "
                       "split"):
        data_lib.load(compose_config([*STREAMED, "data.cv_folds=3"]).data)
    with pytest.raises(ConfigError, match=r"^task\.host_metrics=\['f1_macro'\]: needs the val "
                       "and test labels in memory"):
        train_population([compose_config([*STREAMED, "task.host_metrics=[f1_macro]"])])
