"""Endless training splits with `train.steps_per_epoch`, a finite split read as a sequence of
shuffled passes, and standardisation statistics given in the data node (docs/data.md)."""

import dataclasses

import grain
import numpy as np
import pytest

from helpers import compose_config, killed_in_epoch_3_and_resumed, rows_without_time
from hpjax import data as data_lib
from hpjax.config import ConfigError
from hpjax.config.target import target_config
from hpjax.data.sources import ArraySource
from hpjax.data.stream import Stream
from hpjax.engine.loop import train_population


def blobs(n: int, seed: int) -> ArraySource:
    """`n` records of 4 features and 3 classes, separable."""
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return ArraySource(x, ((x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.5)))


class Again:
    """An iterable without Grain's iterator state: each `iter()` makes the same records anew."""

    def __init__(self, source: ArraySource) -> None:
        self.source = source

    def __iter__(self):
        k = 0
        while True:  # endless: the records over and over
            yield self.source[k % len(self.source)]
            k += 1


def endless(kind: str, seed: int = 0) -> dict:
    """Splits whose train split is endless: a `grain.IterDataset` (`iter`), Grain's endless
    random-access `MapDataset.repeat()` (`repeat`), a plain iterable (`again`)."""
    train = blobs(96, seed)
    shuffled = grain.MapDataset.source(train).shuffle(seed=1).repeat()  # a new order each pass
    splits = {"iter": shuffled.to_iter_dataset(grain.ReadOptions(num_threads=0)),
              "repeat": shuffled, "again": Again(train)}
    return {"train": splits[kind], "val": blobs(40, seed + 1), "test": blobs(40, seed + 2)}


def data_node(kind: str, **extra) -> object:
    return target_config("data", {"_target_": "test_endless.endless", "kind": kind,
                                  "num_classes": 3, "standardize": False, **extra})


BASE = ["model.width=16", "train.batch_size=16", "train.epochs=3", "optimizer.lr=0.03",
        "train.early_stopping.patience=null"]


def config(kind: str, *overrides: str, **data) -> object:
    return dataclasses.replace(compose_config([*BASE, *overrides]), data=data_node(kind, **data))


def test_an_endless_stream_trains_epochs_of_its_steps_and_resumes_where_it_was(tmp_path):
    """A grain.IterDataset of endless shuffled passes, 5 steps an epoch: a population of two
    killed in epoch 3 resumes from epoch 2's checkpoints with the iterator's Grain state (10
    steps of 16 records read) and ends with the metrics of the run never killed."""
    cfgs = [config("iter", "train.steps_per_epoch=5", "train.checkpoint_every=1"),
            config("iter", "train.steps_per_epoch=5", "train.checkpoint_every=1",
                   "optimizer.lr=0.01")]
    whole, saved, _ = killed_in_epoch_3_and_resumed(cfgs, tmp_path)
    assert any(m.get("data", {}).get("train") == {"step": 10, "source": {"next_index": 160}}
               for m in saved)
    assert rows_without_time(whole[0].rows) != rows_without_time(whole[1].rows)
    assert whole[0].rows[-1]["val/accuracy"] > 0.7


def stream_of(kind: str, **data) -> Stream:
    return data_lib.load(data_node(kind, **data))


def blocks(it, n: int) -> list:
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("kind", ["iter", "repeat", "again"])
def test_each_endless_kind_continues_from_its_state(kind):
    """Every kind of endless split: an iterator set to another's state after 2 blocks reads the
    next 3 blocks as that one does; an epoch of 5 steps in blocks of 4 is a block of 4 steps
    and one of 1 (its other 3 weighted out)."""
    stream = stream_of(kind, stream_block=4)
    assert isinstance(stream, Stream) and stream.n_train is None
    assert stream.blocks_per_epoch("train", 16, 5) == 2
    it = stream.iterator("train", 16, steps=5)
    first = blocks(it, 2)
    state = it.get_state()
    rest = blocks(it, 3)
    other = stream.iterator("train", 16, steps=5)
    other.set_state(state)
    for u, v in zip(blocks(other, 3), rest, strict=True):
        for a, b in zip(u, v, strict=True):
            np.testing.assert_array_equal(a, b)
    assert [w.sum(1).tolist() for _, _, w in first] == [[16] * 4, [16, 0, 0, 0]]
    assert [w.sum() for _, _, w in rest] == [64, 16, 64]
    for it_ in (it, other):
        it_.close()


def test_a_finite_split_with_steps_per_epoch_reads_shuffled_passes():
    """20 records, batches of 4, 7 steps an epoch: the 56 records of two epochs are pass after
    pass of the split, each in its own order, batches straddling passes; 5 steps (one pass,
    exactly) read what an epoch of one pass reads."""
    x = np.arange(20, dtype=np.float32)[:, None]
    src = ArraySource(x, np.zeros(20, np.int64))
    stream = Stream(src, src, src, 2, (1,), seed=3, block=3, record_shape=(1,))
    it = stream.iterator("train", 4, steps=7)
    got = [xs[w] for xs, _, w in blocks(it, 2 * stream.blocks_per_epoch("train", 4, 7))]
    ids = np.concatenate(got)[:, 0].astype(int)
    assert len(ids) == 56
    assert sorted(ids[:20]) == sorted(ids[20:40]) == list(range(20))
    assert len(set(ids[40:])) == 16 and list(ids[:20]) != list(ids[20:40])
    one, passes = stream.iterator("train", 4), stream.iterator("train", 4, steps=5)
    for _ in range(4):  # two epochs
        for u, v in zip(next(one), next(passes), strict=True):
            np.testing.assert_array_equal(u, v)
    for i in (it, one, passes):
        i.close()


def test_steps_per_epoch_is_needed_by_an_endless_split_and_refused_on_the_device():
    with pytest.raises(ConfigError, match=r"^train\.steps_per_epoch=None: must be set for an "
                       r"endless train split \(PrefetchIterDataset, without a length\): an "
                       r"epoch is then that many steps$"):
        train_population([config("iter")])
    with pytest.raises(ConfigError, match=r"^train\.steps_per_epoch=5: counts the steps of "
                       r"streamed data; with the splits on the device an epoch is one pass over "
                       r"the training split \(set data\.stream=true, or "
                       r"train\.steps_per_epoch=null\)$"):
        train_population([compose_config(["data=iris", *BASE, "train.steps_per_epoch=5"])])


def one_shot() -> dict:
    return {**endless("iter"), "train": iter([(np.zeros(4, np.float32), 0)])}


def not_iterable() -> dict:
    return {**endless("iter"), "train": 7}


def endless_val() -> dict:
    return {**endless("iter"), "val": endless("repeat")["train"]}


@pytest.mark.parametrize("target,extra,message", [
    ("one_shot", {}, "data._target_='test_endless.one_shot': returned a train split that is "
     "an iterator (list_iterator), read once: give an iterable that starts anew at each iter() "
     "(a grain.IterDataset, a class with __iter__), so that each population and a resumed run "
     "read it from its start"),
    ("not_iterable", {}, "data._target_='test_endless.not_iterable': returned a train split "
     "without a length: give a random-access source (__len__ and __getitem__, or a "
     "grain.MapDataset) or an endless iterable with train.steps_per_epoch, not int"),
    ("endless_val", {}, "data._target_='test_endless.endless_val': returned an endless val "
     "split: only train may be endless (with train.steps_per_epoch), val and test need a "
     "length"),
    ("endless", {"kind": "iter", "standardize": True}, "data.standardize=True: needs the "
     "training statistics, which an endless train split cannot be read through for: give "
     "data.mean and data.std, or set data.standardize=false"),
    ("endless", {"kind": "iter", "stream": False}, "data.stream=False: cannot read an endless "
     "train split into arrays: set data.stream=true (or null)"),
    ("endless", {"kind": "again", "stream_workers": 1}, "data.stream_workers=1: an iterated "
     "train split is read in order by one thread of this process: set data.stream_workers=0"),
])
def test_endless_splits_stop_before_training_with_one_line(target, extra, message):
    node = {"_target_": f"test_endless.{target}", "num_classes": 3, "standardize": False,
            **extra}
    with pytest.raises(ConfigError) as e:
        data_lib.load(target_config("data", node))
    assert str(e.value) == message


class Counted(ArraySource):
    """A source that counts the records read from it."""

    def __init__(self, source: ArraySource) -> None:
        super().__init__(source.x, source.y)
        self.reads = 0

    def __getitem__(self, i: int) -> tuple:
        self.reads += 1
        return super().__getitem__(i)

    def __getitems__(self, idx) -> tuple:
        self.reads += len(idx)
        return super().__getitems__(idx)


COUNTED: list = []


def counted(bad_label: bool = False) -> dict:
    train = blobs(96, 0)
    if bad_label:
        train.y[50] = 3
    COUNTED.append(Counted(train))
    return {**endless("iter"), "train": COUNTED[-1]}


def test_given_statistics_spare_the_pass_over_the_training_split():
    """With data.mean and data.std given, loading reads the training split's record 0 only (it
    tells the shape); its blocks are standardised with the given numbers, and a bad label in
    it stops in one line when its block is read."""
    node = {"_target_": "test_endless.counted", "num_classes": 3, "stream": True,
            "mean": [0.0, 1.0, 0.0, -1.0], "std": 2.0, "stream_block": 2}
    stream = data_lib.load(target_config("data", node))
    assert COUNTED[-1].reads == 1
    np.testing.assert_array_equal(stream.mean, [0, 1, 0, -1])
    np.testing.assert_array_equal(stream.std, [2, 2, 2, 2])
    it = stream.iterator("train", 16)
    xs = next(it)[0]
    it.close()
    assert COUNTED[-1].reads > 1
    raw = np.stack([COUNTED[-1].x[i] for i in data_lib.stream.permute(np.arange(32), 96, 0)])
    np.testing.assert_allclose(xs.reshape(32, 4), (raw - [0, 1, 0, -1]) / 2, rtol=1e-6)
    bad = data_lib.load(target_config("data", {**node, "bad_label": True}))
    it = bad.iterator("train", 16)
    with pytest.raises(ConfigError) as e:
        for _ in range(3):  # 96 records: record 50 is in the second block of 32
            next(it)
    assert str(e.value) == ("data.num_classes=3: labels must be integers in [0, 3); the train "
                            "split holds 3")
    it.close()


def test_given_statistics_standardise_arrays_too():
    raw = data_lib.load(compose_config(["data=iris", "data.standardize=false"]).data)
    given = data_lib.load(compose_config(["data=iris", "data.mean=1.5", "data.std=[1,2,3,4]"]
                                         ).data)
    np.testing.assert_allclose(given.x_train, (raw.x_train - 1.5) / [1, 2, 3, 4], rtol=1e-6)
    np.testing.assert_array_equal(given.std, [1, 2, 3, 4])


@pytest.mark.parametrize("overrides,message", [
    (["data.mean=0"], "data.std=None: must be given with data.mean (both, or neither)"),
    (["data.mean=0", "data.std=[1,0,1,1]"], "data.std=[1,0,1,1]: must be > 0 everywhere"),
    (["data.mean=0", "data.std=1", "data.standardize=false"], "data.mean=0: is given with "
     "data.standardize=false: set data.standardize=true to use it, or leave data.mean unset"),
    (["data.mean=[0,1]", "data.std=1"], "data.mean=[0,1]: must be one number or 4, one per "
     "feature of a sample"),
])
def test_bad_statistics_stop_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        data_lib.load(compose_config(["data=iris", *overrides]).data)
    assert str(e.value) == message
