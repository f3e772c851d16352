"""Splits given as sources (a data function's `{"train": ..., "val": ..., "test": ...}`):
checked before training, in one line per fault, and either streamed or read into arrays
(docs/data.md)."""

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from hpjax.config import ConfigError, DataConfig
from hpjax.data.sources import SPLITS
from hpjax.data.stream import Stream, check, indexed, length, options, read, refuse

_PASS = 1024  # records per read of the checking pass


def given_stats(cfg: DataConfig, features: int) -> Optional[tuple]:
    """`data.mean` and `data.std` as float32 arrays of one value per feature; None where they
    are not given.

    Raises:
      ConfigError: one of them holds neither one number nor one per feature.
    """
    if cfg.mean is None:
        return None
    out = []
    for name in ("mean", "std"):
        value = np.asarray(getattr(cfg, name), np.float32).reshape(-1)
        if len(value) not in (1, features):
            raise ConfigError(f"data.{name}", getattr(cfg, name), f"must be one number or "
                              f"{features}, one per feature of a sample")
        out.append(np.broadcast_to(value, (features,)).copy())
    return tuple(out)


def _lengths(raw: Mapping, key: str, value: str) -> None:
    """Refuses a split without a length (but an endless train split that can be read again
    from its start) or an empty one."""
    for split in SPLITS:
        source = raw[split]
        n = length(source)
        if n == 0:
            raise ConfigError(key, value, f"returned an empty {split} split")
        if n is not None or (split == "train" and indexed(source)):
            continue
        name = type(source).__name__
        if split != "train":
            raise ConfigError(key, value, f"returned an endless {split} split: only train may "
                              "be endless (with train.steps_per_epoch), val and test need a "
                              "length" if hasattr(source, "__len__") else
                              f"returned a {split} split without a length: give a random-access "
                              f"source (__len__ and __getitem__, or a grain.MapDataset), not "
                              f"{name}")
        try:
            it = iter(source)
        except TypeError:
            raise ConfigError(key, value, "returned a train split without a length: give a "
                              "random-access source (__len__ and __getitem__, or a "
                              "grain.MapDataset) or an endless iterable with "
                              f"train.steps_per_epoch, not {name}") from None
        if it is source:
            raise ConfigError(key, value, f"returned a train split that is an iterator ({name}),"
                              " read once: give an iterable that starts anew at each iter() (a "
                              "grain.IterDataset, a class with __iter__), so that each "
                              "population and a resumed run read it from its start")
        if hasattr(it, "close"):  # a Grain iterator's reading threads
            it.close()


def _first(source: Any, key: str, value: str) -> Any:
    """The training split's first record."""
    if indexed(source):
        return source[0]
    it = iter(source)
    try:
        return next(it)
    except StopIteration:
        raise ConfigError(key, value, "returned an empty train split") from None
    finally:
        if hasattr(it, "close"):
            it.close()


def open_sources(raw: Mapping, cfg: DataConfig, regression: bool, where: str) -> Any:
    """Checks the sources in one pass (lengths, record shapes, labels) and takes the training
    split's feature statistics on the way; returns a `Stream`, or, where the data is not
    streamed (`data.stream=false`, or null and at most `data.device_mb`), the splits read into
    arrays as `{"x_train": ..., "y_train": ..., ...}`.

    A streamed training split is not read in that pass where its statistics are given
    (`data.mean`, `data.std`), or not needed, or where it is endless: its records are checked
    as they are read.

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
    _lengths(raw, key, value)
    first = _first(raw["train"], key, value)
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise ConfigError(key, value, "sources must return (x, y) pairs, the train split's "
                          f"record 0 is a {type(first).__name__}")
    shape = np.asarray(first[0]).shape
    features = int(np.prod(shape))
    given = given_stats(cfg, features)
    endless = length(raw["train"]) is None
    if endless:
        if cfg.stream is False:
            raise ConfigError("data.stream", False, "cannot read an endless train split into "
                              "arrays: set data.stream=true (or null)")
        if cfg.standardize and given is None:
            raise ConfigError("data.standardize", True, "needs the training statistics, which "
                              "an endless train split cannot be read through for: give "
                              "data.mean and data.std, or set data.standardize=false")
        if cfg.stream_workers and not indexed(raw["train"]):
            raise ConfigError("data.stream_workers", cfg.stream_workers, "an iterated train "
                              "split is read in order by one thread of this process: set "
                              "data.stream_workers=0")
        streamed = True
    else:
        size_mb = sum(len(raw[s]) for s in SPLITS) * (features + 1) * 4 / 2**20
        streamed = cfg.stream if cfg.stream is not None else size_mb > cfg.device_mb
    if streamed:
        refuse(cfg, regression)
    measure = not endless and cfg.standardize and given is None
    kept: dict = {}
    total, squares = np.zeros(features), np.zeros(features)
    for split in SPLITS:
        if streamed and split == "train" and (endless or given is not None):
            continue  # checked as it is read
        source, chunks = raw[split], []
        for start in range(0, len(source), _PASS):
            x, y = read(source, np.arange(start, min(start + _PASS, len(source))))
            check(x, y, shape, k, split, where)
            x = np.asarray(x).reshape(len(x), features).astype(np.float32)
            if split == "train" and measure:
                total += x.sum(0, dtype=np.float64)
                squares += np.square(x, dtype=np.float64).sum(0)
            if not streamed:
                chunks.append((x.reshape(len(x), *shape), y))
        if not streamed:
            kept[f"x_{split}"] = np.concatenate([c[0] for c in chunks])
            kept[f"y_{split}"] = np.concatenate([c[1] for c in chunks])
    if not streamed:
        return kept
    mean, std = given or (None, None)
    if measure:
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
                  classes=np.arange(k), record_shape=shape, where=where, **options(cfg))
