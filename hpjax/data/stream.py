"""Streamed data: splits read from random-access sources through Grain, a block of batches at a
time, instead of arrays placed whole on the device (docs/data.md).

The training split is read in a shuffled order, one permutation per epoch (seeded by
`data.split_seed`, shared by every member of a population), cut into `train.batch_size` batches
(the remainder of each epoch dropped, as on the device) and into blocks of `data.stream_block`
batches: the compiled program scans over a block, so the step compiles once and the host reads
and transfers the next block while the device trains. Validation and test are read in order,
their last batch padded and weighted out. Grain reads blocks ahead in threads
(`data.stream_threads`), or in worker processes (`data.stream_workers`), and keeps at most
`data.stream_buffer` of them: memory is bounded by the buffers, not by the data.

With `train.steps_per_epoch` an epoch is that many steps of the training split read as one
sequence of passes, each in a new shuffled order; an endless split (no length, or Grain's
endless `MapDataset.repeat()`) is read in its own order: by index, or, an iterable, through
`hpjax.data.endless`.
"""

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpjax.config import ConfigError, DataConfig
from hpjax.data.sources import SPLITS, ArraySource

_ENDLESS = sys.maxsize // 4  # blocks: an iterator serves every epoch of a run, refills included
ENDLESS = sys.maxsize  # the length Grain gives an endless dataset (`MapDataset.repeat()`)


def length(source: Any) -> Optional[int]:
    """The records of a split; None where it is endless: no length, or Grain's endless one."""
    try:
        n = len(source)
    except TypeError:
        return None
    return None if n >= ENDLESS else n


def indexed(source: Any) -> bool:
    """Whether a split is read by index (a random-access source), not by iterating it."""
    return hasattr(source, "__getitem__")


def permute(idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded bijection of [0, n), applied to `idx` without materialising it (memory of the
    indices asked, not of n): a 4-round Feistel network on the next even power of two, walked
    until it lands below n (Grain's own `index_shuffle` does the same per index; this one is
    vectorised, a per-record call costing more than the training step)."""
    bits = max(2, (int(n - 1).bit_length() + 1) // 2 * 2)
    half, mask = bits // 2, np.uint64((1 << (bits // 2)) - 1)
    keys = [np.uint64((seed * 0x9E3779B97F4A7C15 + r * 0xBF58476D1CE4E5B9) % 2**64)
            for r in range(4)]

    def once(v: np.ndarray) -> np.ndarray:
        left, right = v >> np.uint64(half), v & mask
        for k in keys:
            h = (right ^ k) * np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
            left, right = right, left ^ (h & mask)
        return (left << np.uint64(half)) | right

    with np.errstate(over="ignore"):
        v = once(np.asarray(idx, np.uint64))
        out = v >= n
        while out.any():
            v[out] = once(v[out])
            out = v >= n
    return v.astype(np.int64)


def read(source: Any, idx: Sequence[int]) -> tuple:
    """(features, labels) of the records `idx`, stacked: one batched read where the source has
    `__getitems__`, else a record at a time."""
    if hasattr(source, "__getitems__"):
        x, y = source.__getitems__(list(idx) if not isinstance(source, ArraySource) else idx)
        return np.asarray(x), np.asarray(y)
    return stack([source[int(i)] for i in idx])


def stack(pairs: Sequence) -> tuple:
    """(features, labels) of (x, y) records; features of differing shapes stay a list (for
    `check` to name)."""
    xs = [np.asarray(p[0]) for p in pairs]
    same = all(x.shape == xs[0].shape for x in xs)
    return np.stack(xs) if xs and same else xs, np.asarray([p[1] for p in pairs])


def check(x: Any, y: np.ndarray, shape: tuple, k: int, split: str, where: str) -> None:
    """Refuses, in one line, records of another shape than `shape` or labels outside [0, k)."""
    key, value = where.split("=", 1)
    got = x.shape[1:] if isinstance(x, np.ndarray) else next(
        (np.shape(a) for a in x if np.shape(a) != shape), shape)
    if got != shape:
        raise ConfigError(key, value, f"returned records of different shapes: {split} has "
                          f"{got}, train's record 0 {shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (
            len(y) and (y.min() < 0 or y.max() >= k)):
        bad = y[(y < 0) | (y >= k)][:3] if y.ndim == 1 else y[:1]
        raise ConfigError("data.num_classes", k, f"labels must be integers in [0, {k}); the "
                          f"{split} split holds {', '.join(map(str, bad))}")


class _Blocks:
    """Block `j` of a split (a Grain `map` over block indices; pickled into workers): epoch
    `j // per_epoch`, as (x [block, batch, ...] float32, y [block, batch] int32, weight
    [block, batch] bool: false for padding). `steps`: the training split's steps per epoch,
    its records read as one sequence of passes (a batch may straddle two); None: an epoch is
    one pass."""

    def __init__(self, stream: "Stream", split: str, batch: int, shuffle: bool,
                 steps: Optional[int] = None) -> None:
        self.source, self.n = getattr(stream, split), length(getattr(stream, split))
        self.batch, self.shuffle, self.passes = batch, shuffle, steps is not None
        self.steps = steps or (self.n // batch if shuffle else -(-self.n // batch))
        self.block = min(stream.block, self.steps)  # a short split: no block of padding
        self.per_epoch = -(-self.steps // self.block)
        self.seed, self.shape = stream.seed, stream.input_shape
        self.mean, self.std = (stream.mean, stream.std) if stream.raw else (None, None)
        self.split, self.record, self.k = split, stream.record_shape, stream.num_classes
        self.where = stream.where

    def positions(self, j: int) -> np.ndarray:
        """The records of block `j`: positions in the split (or in its sequence of passes)."""
        epoch, b = divmod(int(j), self.per_epoch)
        if self.passes:
            first, count = epoch * self.steps + b * self.block, min(self.block,
                                                                      self.steps - b * self.block)
            return np.arange(first * self.batch, (first + count) * self.batch)
        first = b * self.block * self.batch
        end = min(first + self.block * self.batch,
                  self.steps * self.batch if self.shuffle else self.n)
        return np.arange(first, end)

    def __call__(self, j: int) -> tuple:
        pos = self.positions(j)
        if self.n is None:  # endless: the source's own order
            idx = pos
        elif self.passes:  # pass p of the sequence in the order of epoch p
            idx = np.empty_like(pos)
            for p in np.unique(pos // self.n):
                at = pos // self.n == p
                idx[at] = permute(pos[at] % self.n, self.n, self.seed * 1_000_003 + int(p))
        else:
            epoch = int(j) // self.per_epoch
            idx = permute(pos, self.n, self.seed * 1_000_003 + epoch) if self.shuffle else pos
        return self.pack(*read(self.source, idx))

    def pack_pairs(self, pairs: Sequence) -> tuple:
        return self.pack(*stack(pairs))

    def pack(self, x: Any, y: np.ndarray) -> tuple:
        """The records `x, y` (checked), standardised and padded to a block."""
        if self.record is not None:
            check(x, y, self.record, self.k, self.split, self.where)
        x = np.asarray(x).reshape(len(x), -1).astype(np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        size = self.block * self.batch
        xs, ys = np.zeros((size, x.shape[1]), np.float32), np.zeros(size, np.int32)
        xs[:len(x)], ys[:len(x)] = x, y
        return (xs.reshape(self.block, self.batch, *self.shape),
                ys.reshape(self.block, self.batch),
                (np.arange(size) < len(x)).reshape(self.block, self.batch))


@dataclass(frozen=True)
class Stream:
    """The splits as random-access sources, what the engine reads of a data set (its `Dataset`'s
    shape, size and class fields), and how they are read."""

    train: Any
    val: Any
    test: Any
    num_classes: int
    input_shape: tuple
    seed: int  # of each epoch's order (data.split_seed)
    block: int = 8
    workers: int = 0
    threads: int = 2
    buffer: int = 2
    # the training split's feature statistics; applied while reading when `raw`, else the
    # sources' features are standardised already (arrays streamed on request)
    mean: Optional[np.ndarray] = None
    std: Optional[np.ndarray] = None
    raw: bool = True
    classes: Optional[np.ndarray] = None
    folds: int = 0
    y_mean: None = None
    y_std: None = None
    y_scale: float = 1.0
    # a record's features' shape, as the sources give them (None: not checked while read), and
    # where they come from (`data._target_=...`), for the one-line errors
    record_shape: Optional[tuple] = None
    where: str = "data=arrays"

    @property
    def n_train(self) -> Optional[int]:
        """None: an endless training split (`train.steps_per_epoch` sets the epoch)."""
        return length(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    @property
    def n_test(self) -> int:
        return len(self.test)

    def prepare(self, x: Any) -> np.ndarray:
        """Raw features, shaped and standardised as the streamed batches are."""
        x = np.asarray(x, np.float32).reshape(len(x), -1)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.reshape(len(x), *self.input_shape)

    def blocks_per_epoch(self, split: str, batch: int, steps: Optional[int] = None) -> int:
        return _Blocks(self, split, batch, split == "train",
                       steps if split == "train" else None).per_epoch

    def iterator(self, split: str, batch: int, *, steps: Optional[int] = None, put: bool = False,
                 device: Any = None, workers: bool = True) -> Any:
        """A checkpointable Grain iterator over every epoch's blocks of `split` (train shuffled,
        the others in order), read ahead and, with `put`, put on `device` ahead of the step
        (None: the default device, uncommitted, so that a program whose state is elsewhere
        still takes it); `steps`: the training split's steps per epoch (None: a pass);
        `workers`: the configured worker processes (False: threads only)."""
        import grain

        blocks = _Blocks(self, split, batch, split == "train", steps if split == "train" else None)
        if not indexed(blocks.source):  # an endless iterable: read in order, in this process
            from hpjax.data.endless import Blocks

            ds = Blocks(blocks)
            if not put:  # device_put reads ahead in a thread of its own
                ds = grain.experimental.ThreadPrefetchIterDataset(
                    ds, prefetch_buffer_size=self.buffer)
        else:
            ds = grain.MapDataset.range(_ENDLESS).map(blocks).to_iter_dataset(
                grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=self.buffer))
        if workers and self.workers and indexed(blocks.source):  # a worker reads every n-th block
            from absl import flags

            if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags' defaults
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.workers, per_worker_buffer_size=self.buffer))
        if put:
            ds = grain.experimental.device_put(ds, device, cpu_buffer_size=self.buffer,
                                               device_buffer_size=2)
        return iter(ds)


def is_sources(raw: Any) -> bool:
    """Whether a data function returned splits as sources (`{"train": ..., ...}`) rather than
    arrays."""
    return isinstance(raw, Mapping) and any(k in raw for k in SPLITS) and not any(
        isinstance(v, np.ndarray) for v in raw.values())


def refuse(cfg: DataConfig, regression: bool) -> None:
    """What streamed data cannot serve (the data node's part), in one line."""
    if regression:
        raise ConfigError("data.stream", cfg.stream, "streams classification data only: "
                          "task=regression trains on arrays (set data.stream=false)")
    if cfg.cv_folds > 1:
        raise ConfigError("data.cv_folds", cfg.cv_folds, "streamed data has its own val split: "
                          "cross-validation needs arrays (data.cv_folds=1 or data.stream=false)")


def options(cfg: DataConfig) -> dict:
    """The `Stream` fields that `data.*` sets."""
    return {"seed": cfg.split_seed, "block": cfg.stream_block, "workers": cfg.stream_workers,
            "threads": cfg.stream_threads, "buffer": cfg.stream_buffer}


def from_arrays(ds: Any, cfg: DataConfig, regression: bool) -> Stream:
    """A loaded `Dataset`'s splits (standardised already) streamed: `data.stream=true` on
    arrays."""
    refuse(cfg, regression)
    return Stream(ArraySource(ds.x_train, ds.y_train), ArraySource(ds.x_val, ds.y_val),
                  ArraySource(ds.x_test, ds.y_test), ds.num_classes, tuple(ds.input_shape),
                  mean=ds.mean, std=ds.std, raw=False, classes=ds.classes, **options(cfg))
