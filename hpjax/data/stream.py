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
"""

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpjax.config import ConfigError, DataConfig
from hpjax.data.sources import SPLITS, ArraySource

_ENDLESS = sys.maxsize // 4  # blocks: an iterator serves every epoch of a run, refills included
_PASS = 1024  # records per read of the checking pass


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
    pairs = [source[int(i)] for i in idx]
    return np.stack([np.asarray(p[0]) for p in pairs]), np.asarray([p[1] for p in pairs])


class _Blocks:
    """Block `j` of a split (a Grain `map` over block indices; pickled into workers): epoch
    `j // per_epoch`, as (x [block, batch, ...] float32, y [block, batch] int32, weight
    [block, batch] bool: false for padding)."""

    def __init__(self, stream: "Stream", split: str, batch: int, shuffle: bool) -> None:
        self.source, self.n = getattr(stream, split), len(getattr(stream, split))
        self.batch, self.shuffle = batch, shuffle
        self.steps = self.n // batch if shuffle else -(-self.n // batch)
        self.block = min(stream.block, self.steps)  # a short split: no block of padding
        self.per_epoch = -(-self.steps // self.block)
        self.seed, self.shape = stream.seed, stream.input_shape
        self.mean, self.std = (stream.mean, stream.std) if stream.raw else (None, None)

    def __call__(self, j: int) -> tuple:
        epoch, b = divmod(int(j), self.per_epoch)
        first = b * self.block * self.batch
        end = min(first + self.block * self.batch,
                  self.steps * self.batch if self.shuffle else self.n)
        pos = np.arange(first, end)
        idx = permute(pos, self.n, self.seed * 1_000_003 + epoch) if self.shuffle else pos
        x, y = read(self.source, idx)
        x = x.reshape(len(x), -1).astype(np.float32)
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

    @property
    def n_train(self) -> int:
        return len(self.train)

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

    def blocks_per_epoch(self, split: str, batch: int) -> int:
        return _Blocks(self, split, batch, split == "train").per_epoch

    def iterator(self, split: str, batch: int, *, put: bool = False, device: Any = None,
                 workers: bool = True) -> Any:
        """A checkpointable Grain iterator over every epoch's blocks of `split` (train shuffled,
        the others in order), read ahead and, with `put`, put on `device` ahead of the step
        (None: the default device, uncommitted, so that a program whose state is elsewhere
        still takes it); `workers`: the configured worker processes (False: threads only)."""
        import grain

        blocks = grain.MapDataset.range(_ENDLESS).map(_Blocks(self, split, batch, split == "train"))
        ds = blocks.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                      prefetch_buffer_size=self.buffer))
        if workers and self.workers:  # each worker reads every workers-th block
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


def _refuse(cfg: DataConfig, regression: bool) -> None:
    if regression:
        raise ConfigError("data.stream", cfg.stream, "streams classification data only: "
                          "task=regression trains on arrays (set data.stream=false)")
    if cfg.cv_folds > 1:
        raise ConfigError("data.cv_folds", cfg.cv_folds, "streamed data has its own val split: "
                          "cross-validation needs arrays (data.cv_folds=1 or data.stream=false)")


def _options(cfg: DataConfig) -> dict:
    return {"seed": cfg.split_seed, "block": cfg.stream_block, "workers": cfg.stream_workers,
            "threads": cfg.stream_threads, "buffer": cfg.stream_buffer}


def from_arrays(ds: Any, cfg: DataConfig, regression: bool) -> Stream:
    """A loaded `Dataset`'s splits (standardised already) streamed: `data.stream=true` on
    arrays."""
    _refuse(cfg, regression)
    return Stream(ArraySource(ds.x_train, ds.y_train), ArraySource(ds.x_val, ds.y_val),
                  ArraySource(ds.x_test, ds.y_test), ds.num_classes, tuple(ds.input_shape),
                  mean=ds.mean, std=ds.std, raw=False, classes=ds.classes, **_options(cfg))


def open_sources(raw: Mapping, cfg: DataConfig, regression: bool, where: str) -> Any:
    """Checks the sources in one pass (lengths, record shapes, labels) and takes the training
    split's feature statistics on the way; returns a `Stream`, or, where the data is not
    streamed (`data.stream=false`, or null and at most `data.device_mb`), the splits read into
    arrays as `{"x_train": ..., "y_train": ..., ...}`.

    Raises:
      ConfigError: in one line, naming the split: missing, without a length, empty; a record not
        an (x, y) pair, of another shape than the first; a label outside [0, num_classes).
    """
    key, value = where.split("=", 1)
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise ConfigError(key, value, f"returned splits {', '.join(sorted(raw))}; streamed data "
                          f"needs train, val and test (missing: {', '.join(missing)})")
    k = cfg.num_classes
    if k is None:
        raise ConfigError("data.num_classes", None, "must be set for data given as sources "
                          "(they are not read whole to count the labels)")
    for split in SPLITS:
        try:
            n = len(raw[split])
        except TypeError:
            raise ConfigError(key, value, f"returned a {split} split without a length: give a "
                              "random-access source (__len__ and __getitem__, or a "
                              f"grain.MapDataset), not {type(raw[split]).__name__}") from None
        if n == 0:
            raise ConfigError(key, value, f"returned an empty {split} split")
    first = raw["train"][0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise ConfigError(key, value, "sources must return (x, y) pairs, the train split's "
                          f"record 0 is a {type(first).__name__}")
    shape = np.asarray(first[0]).shape
    features = int(np.prod(shape))
    size_mb = sum(len(raw[s]) for s in SPLITS) * (features + 1) * 4 / 2**20
    streamed = cfg.stream if cfg.stream is not None else size_mb > cfg.device_mb
    if streamed:
        _refuse(cfg, regression)
    kept: dict = {}
    total, squares = np.zeros(features), np.zeros(features)
    for split in SPLITS:
        source, chunks = raw[split], []
        for start in range(0, len(source), _PASS):
            idx = np.arange(start, min(start + _PASS, len(source)))
            if hasattr(source, "__getitems__"):
                x, y = read(source, idx)
                got = x.shape[1:]
            else:
                pairs = [source[int(i)] for i in idx]
                got = next((np.asarray(p[0]).shape for p in pairs
                            if np.asarray(p[0]).shape != shape), shape)
                x = np.stack([np.asarray(p[0]) for p in pairs]) if got == shape else None
                y = np.asarray([p[1] for p in pairs])
            if got != shape:
                raise ConfigError(key, value, f"returned records of different shapes: {split} "
                                  f"has {got}, train's record 0 {shape}")
            y = np.asarray(y)
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (
                    len(y) and (y.min() < 0 or y.max() >= k)):
                bad = y[(y < 0) | (y >= k)][:3] if y.ndim == 1 else y[:1]
                raise ConfigError("data.num_classes", k, f"labels must be integers in [0, {k}); "
                                  f"the {split} split holds {', '.join(map(str, bad))}")
            x = x.reshape(len(x), features).astype(np.float32)
            if split == "train":
                total += x.sum(0, dtype=np.float64)
                squares += np.square(x, dtype=np.float64).sum(0)
            if not streamed:
                chunks.append((x.reshape(len(x), *shape), y))
        if not streamed:
            kept[f"x_{split}"] = np.concatenate([c[0] for c in chunks])
            kept[f"y_{split}"] = np.concatenate([c[1] for c in chunks])
    if not streamed:
        return kept
    mean = std = None
    if cfg.standardize:
        n = len(raw["train"])
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
        mean, std = mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)
    input_shape = tuple(cfg.image_shape) if cfg.image_shape is not None else (
        shape if len(shape) > 1 else (features,))
    if int(np.prod(input_shape)) != features:
        raise ConfigError("data.image_shape", list(input_shape),
                          f"must hold exactly the {features} features of each sample")
    return Stream(raw["train"], raw["val"], raw["test"], k, input_shape, mean=mean, std=std,
                  classes=np.arange(k), **_options(cfg))
