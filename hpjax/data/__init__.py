"""Datasets: load, split (stratified, fixed seed) and standardise with training statistics only."""

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpjax.config import ConfigError, CsvDataConfig, DataConfig, NpzDataConfig
from hpjax.config.data import ArrayRecordDataConfig, Mnist1dDataConfig, NpyDataConfig
from hpjax.data import stream as stream_lib
from hpjax.data.holdout import kfold, train_test_split
from hpjax.data.sources import write_array_record, write_npy
from hpjax.data.splits import given_stats, open_sources
from hpjax.data.stream import Stream


@dataclass(frozen=True)
class Dataset:
    """Float32 features and int32 labels of the three splits, as NumPy arrays on the host.

    With `data.cv_folds=k` (k >= 2) every array has a leading fold axis of size k: fold i trains on
    `x_train[i]`, validates on `x_val[i]` and is tested on `x_test[i]` (the one test split,
    standardised with fold i's training statistics).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    folds: int = 0  # 0: no fold axis
    # The label of each class index, as the data gave it; the training split's feature mean and
    # std the splits were standardised with (None: not standardised, or folds)
    classes: Optional[np.ndarray] = None
    mean: Optional[np.ndarray] = None
    std: Optional[np.ndarray] = None
    # Regression: the training split's target mean and std the targets were standardised with
    y_mean: Optional[np.ndarray] = None
    y_std: Optional[np.ndarray] = None

    @property
    def y_scale(self) -> float:
        """One scale for the reported errors (mse, mae): the targets' std (their mean over
        several targets)."""
        return 1.0 if self.y_std is None else float(np.mean(self.y_std))

    def prepare(self, x: Any) -> np.ndarray:
        """Raw features, as the data gave them, shaped and standardised as the splits are."""
        x = _flat(np.asarray(x))
        if self.mean is not None:
            x = ((x - self.mean) / self.std).astype(np.float32)
        return x.reshape(len(x), *self.input_shape)

    @property
    def input_shape(self) -> tuple:
        return self.x_train.shape[2:] if self.folds else self.x_train.shape[1:]

    @property
    def n_train(self) -> int:
        return self.y_train.shape[1 if self.folds else 0]

    @property
    def n_val(self) -> int:
        return self.y_val.shape[1 if self.folds else 0]


_CACHE: dict[tuple, Dataset] = {}


def load(cfg: DataConfig, regression: bool = False) -> Dataset | Stream:
    """Loads the configured data set, splits it and standardises it; `regression`: the labels
    are float targets (standardised too), else class labels. Sources larger than
    `data.device_mb` (or any data with `data.stream=true`) come back as a `Stream` to read
    through Grain (docs/data.md).

    The trials of a sweep in one process share one load (a file is read again once it changes).

    Raises:
      ConfigError: the file does not parse, a key or column is missing, or the data is too small.
    """
    path = getattr(cfg, "path", None)
    key = (repr(cfg), os.stat(path).st_mtime_ns if path and os.path.isfile(path) else None,
           regression)
    if key not in _CACHE:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _load(cfg, regression)
    return _CACHE[key]


def _load(cfg: DataConfig, regression: bool) -> Dataset | Stream:
    loader = _LOADERS.get(type(cfg))
    arrays = loader(cfg) if loader else cfg.arrays()
    if stream_lib.is_sources(arrays):  # streamed, or read into arrays where they fit
        arrays = open_sources(arrays, cfg, regression, _where(cfg))
        if isinstance(arrays, Stream):
            return arrays
    ds = _arrays(arrays, cfg, regression)
    return stream_lib.from_arrays(ds, cfg, regression) if cfg.stream else ds


def _arrays(arrays: Any, cfg: DataConfig, regression: bool) -> Dataset:
    labels = _targets if regression else _labels
    if isinstance(arrays, Mapping):
        x_tr, y_tr, x_va, y_va, x_te, y_te = _ready_splits(arrays, cfg, regression)
        sample_shape = x_tr.shape[1:]
        y_all, num_classes, classes = labels([y_tr, y_va, y_te], cfg)
        y_tr, y_va, y_te = np.split(y_all, np.cumsum([len(y_tr), len(y_va)]))
        splits = (_flat(x_tr), y_tr, _flat(x_va), y_va, _flat(x_te), y_te)
        if len(x_va) == 0:  # no validation split given: hold out val_fraction of the training
            splits = _split_val(*splits[:2], *splits[4:], cfg)
    else:
        x, y = _pair(arrays, cfg, regression)
        sample_shape = ()  # flattened, as (features,), unless data.image_shape is set
        y, num_classes, classes = labels([y], cfg)
        splits = _split(_flat(x), y, cfg)
    y_mean = y_std = None
    if regression:  # targets standardised with the training split's (the CV pool's) statistics
        pool = np.concatenate([splits[1], splits[3]]) if cfg.cv_folds > 1 else splits[1]
        y_mean, y_std = pool.mean(0), np.maximum(pool.std(0), 1e-8).astype(np.float32)
        splits = tuple(((a - y_mean) / y_std).astype(np.float32) if i % 2 else a
                       for i, a in enumerate(splits))
    n_features = splits[0].shape[1]
    shape = tuple(sample_shape) if len(sample_shape) > 1 else (n_features,)
    if cfg.image_shape is not None:
        shape = tuple(cfg.image_shape)
        if int(np.prod(shape)) != n_features:
            raise ConfigError("data.image_shape", list(shape),
                              f"must hold exactly the {n_features} features of each sample")
    folds = _folds(splits, cfg) if cfg.cv_folds > 1 else [splits]
    given = given_stats(cfg, n_features)  # data.mean, data.std: instead of each fold's own
    if cfg.standardize:
        folds = [_standardize(*s, stats=given) for s in folds]
    # features (even places) take the sample shape; targets (odd) keep theirs: several
    # regression targets are 2-D too
    arrays = [[a.reshape(len(a), *shape) if i % 2 == 0 and a.ndim == 2 else a
               for i, a in enumerate(s)] for s in folds]
    if cfg.cv_folds > 1:
        return Dataset(*map(np.stack, zip(*arrays, strict=True)), num_classes=num_classes,
                       folds=cfg.cv_folds, classes=classes, y_mean=y_mean, y_std=y_std)
    mean, std = (given or _stats(splits[0])) if cfg.standardize else (None, None)
    return Dataset(*arrays[0], num_classes=num_classes, classes=classes, mean=mean, std=std,
                   y_mean=y_mean, y_std=y_std)


def _flat(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).reshape(len(x), int(np.prod(x.shape[1:])))


def _where(cfg: DataConfig) -> str:
    target = getattr(cfg, "_target_", None)
    return f"data._target_={target}" if target else f"data={cfg.name}"


def _pair(arrays: Any, cfg: DataConfig, regression: bool = False) -> tuple:
    """(x, y) as arrays, checked: numeric features, 1-D labels (regression: targets of shape
    (samples,) or (samples, outputs)), one label per sample."""
    if not (isinstance(arrays, (tuple, list)) and len(arrays) == 2):
        raise ConfigError(*_where(cfg).split("=", 1), "must return (x, y) or a dict of splits "
                          f"(x_train, y_train, x_test, y_test), got {type(arrays).__name__}")
    x, y = np.asarray(arrays[0]), np.asarray(arrays[1])
    if x.ndim < 2 or y.ndim not in ((1, 2) if regression else (1,)) or len(x) != len(y):
        raise ConfigError(*_where(cfg).split("=", 1),
                          f"must return features x of shape (samples, ...) and labels y of shape "
                          f"(samples,); got x {x.shape}, y {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(*_where(cfg).split("=", 1), f"must return numeric features, got "
                          f"{x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ConfigError(*_where(cfg).split("=", 1), "returned features with NaN or inf")
    return x, y


def _ready_splits(arrays: Mapping, cfg: DataConfig, regression: bool = False) -> tuple:
    need = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in need if k not in arrays]
    if missing or ("x_val" in arrays) != ("y_val" in arrays):
        raise ConfigError(*_where(cfg).split("=", 1),
                          "a dict of splits must hold x_train, y_train, x_test, y_test (and "
                          f"x_val with y_val, or neither); got keys {', '.join(sorted(arrays))}")
    out = []
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            out += _pair((arrays[f"x_{split}"], arrays[f"y_{split}"]), cfg, regression)
        else:
            out += [np.zeros((0, *out[0].shape[1:]), np.float32),
                    np.zeros((0, *out[1].shape[1:]), out[1].dtype)]
    shapes = {a.shape[1:] for a in out[0::2] if len(a)}
    if len(shapes) > 1:
        raise ConfigError(*_where(cfg).split("=", 1), "returned splits whose samples differ in "
                          f"shape: {sorted(shapes)}")
    return tuple(out)


def _labels(ys: list, cfg: DataConfig) -> tuple:
    """The labels of every split as int32 class indices, the number of classes, and the label
    of each class index.

    With `data.num_classes` set, integer labels must lie in [0, num_classes) (other labels are
    mapped to indices when there are exactly that many distinct values); unset, the distinct
    labels in sorted order are the classes.
    """
    y = np.concatenate(ys)
    labels, index = np.unique(y, return_inverse=True)
    k = cfg.num_classes
    if k is not None and np.issubdtype(y.dtype, np.integer):
        outside = labels[(labels < 0) | (labels >= k)]
        if len(outside):
            raise ConfigError("data.num_classes", k,
                              f"labels must be integers in [0, {k}); {_where(cfg)} returned "
                              f"{', '.join(map(str, outside[:5]))}")
        return y.astype(np.int32), k, np.arange(k)
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
        raise ConfigError(*_where(cfg).split("=", 1),
                          "returned non-integer class labels (regression needs task=regression)")
    if k is not None and len(labels) != k:
        raise ConfigError("data.num_classes", k, f"{_where(cfg)} has {len(labels)} distinct "
                          "labels")
    if len(labels) < 2:
        raise ConfigError("data", cfg.name, f"needs at least 2 classes, found {len(labels)}")
    return index.astype(np.int32), len(labels), labels


def _targets(ys: list, cfg: DataConfig) -> tuple:
    """Regression targets of every split as float32, the number of outputs, no classes."""
    y = np.concatenate(ys)
    if not np.issubdtype(y.dtype, np.number):
        raise ConfigError(*_where(cfg).split("=", 1), f"returned targets of type {y.dtype}; "
                          "task=regression needs numbers")
    y = y.astype(np.float32)
    bad = int((~np.isfinite(y)).sum())
    if bad:
        raise ConfigError(*_where(cfg).split("=", 1), f"returned {bad} regression target"
                          f"{'' if bad == 1 else 's'} that are NaN or inf: drop or fill them")
    return y, 1 if y.ndim == 1 else y.shape[1], None


def _stratify(y: np.ndarray, least: int) -> Optional[np.ndarray]:
    """Class labels to stratify a split by, where every class has `least` samples; float
    targets (regression) and tiny classes: none."""
    if not np.issubdtype(y.dtype, np.integer) or np.bincount(y).min() < least:
        return None
    return y


def _split_val(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
               cfg: DataConfig) -> tuple:
    """Holds out `val_fraction` of a given training split for validation (stratified)."""
    try:
        tr, va = train_test_split(len(x_tr), cfg.val_fraction, cfg.split_seed, _stratify(y_tr, 2))
    except ValueError as e:
        raise ConfigError("data", cfg.name, f"too few training samples ({len(x_tr)}) to split "
                          f"off validation: {e}") from None
    return x_tr[tr], y_tr[tr], x_tr[va], y_tr[va], x_te, y_te


def load_mnist1d(cfg: Any) -> dict:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ConfigError("data", "mnist1d", "needs the mnist1d package: pip install "
                          "'hpjax[mnist1d]'") from None
    import random

    args = get_dataset_args()
    args.num_samples, args.seed = cfg.n_samples, cfg.seed
    # make_dataset seeds NumPy's and Python's global generators: leave them as they were
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x_train": d["x"], "y_train": d["y"], "x_test": d["x_test"], "y_test": d["y_test"]}


def _folds(splits: tuple, cfg: DataConfig) -> list[tuple]:
    """k stratified folds of the training and validation samples; the test split stays out.

    Every fold has the same size, so the folds train as members of one program: the last
    `n mod k` samples of the (shuffled) pool are left out, at most k - 1 of them.
    """
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits
    k = cfg.cv_folds
    n = (len(x_tr) + len(x_va)) // k * k
    x, y = np.concatenate([x_tr, x_va])[:n], np.concatenate([y_tr, y_va])[:n]
    if n < 2 * k:
        raise ConfigError("data.cv_folds", k, f"needs at least 2 samples per fold, the "
                          f"training and validation splits hold {len(x_tr) + len(x_va)}")
    # Stratified where every class can appear in every fold (as GridSearchCV(cv=k) does).
    return [(x[tr], y[tr], x[va], y[va], x_te, y_te)
            for tr, va in kfold(n, k, cfg.split_seed, _stratify(y, k))]


def load_npz(cfg: NpzDataConfig) -> tuple:
    try:
        with np.load(cfg.path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise ConfigError("data.path", cfg.path, f"must be a readable .npz file ({e})") from None
    for key_name in ("x_key", "y_key"):
        key = getattr(cfg, key_name)
        if key not in arrays:
            raise ConfigError(f"data.{key_name}", key,
                              f"must be one of the arrays in {cfg.path}: "
                              f"{', '.join(sorted(arrays))}")
    x, y = arrays[cfg.x_key], arrays[cfg.y_key]
    if y.ndim != 1 or len(x) != len(y):
        raise ConfigError("data.y_key", cfg.y_key,
                          f"must name a 1-D label array as long as {cfg.x_key} ({len(x)} rows); "
                          f"got shape {y.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ConfigError("data.x_key", cfg.x_key, f"must name a numeric array, got {x.dtype}")
    return x, y


def load_csv(cfg: CsvDataConfig) -> tuple:
    try:
        with open(cfg.path, newline="") as f:
            rows = list(csv.reader(f, delimiter=cfg.delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError("data.path", cfg.path, f"must be a readable CSV file ({e})") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise ConfigError("data.path", cfg.path, "must hold a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if cfg.label_column not in header:
        raise ConfigError("data.label_column", cfg.label_column,
                          f"must be one of the columns of {cfg.path}: {', '.join(header)}")
    label_at = header.index(cfg.label_column)
    features = [i for i in range(len(header)) if i != label_at]
    x = np.empty((len(rows) - 1, len(features)), np.float32)
    y = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError("data.path", cfg.path,
                              f"line {r} has {len(row)} fields, the header has {len(header)}")
        y.append(row[label_at].strip())
        for j, i in enumerate(features):
            try:
                x[r - 2, j] = float(row[i])
            except ValueError:
                raise ConfigError("data.path", cfg.path,
                                  f"line {r}, column {header[i]!r}: {row[i]!r} is not a number"
                                  ) from None
    return x, np.asarray(y)


def _split(x: np.ndarray, y: np.ndarray, cfg: DataConfig) -> tuple:
    held_out = cfg.val_fraction + cfg.test_fraction
    # Stratify where every class can appear in every split; tiny classes fall back to random.
    stratify = _stratify(y, 3)
    try:
        tr, rest = train_test_split(len(x), held_out, cfg.split_seed, stratify)
        x_rest, y_rest = x[rest], y[rest]
        rest_strat = _stratify(y_rest, 2) if stratify is not None else None
        va, te = train_test_split(len(x_rest), cfg.test_fraction / held_out, cfg.split_seed,
                                  rest_strat)
    except ValueError as e:
        raise ConfigError("data", cfg.name, f"too few samples ({len(x)}) to split: {e}") from None
    return x[tr], y[tr], x_rest[va], y_rest[va], x_rest[te], y_rest[te]


def _stats(x_tr: np.ndarray) -> tuple:
    """(mean, std) of each feature; a constant feature (a blank pixel) gets std 1 and stays 0."""
    std = x_tr.std(axis=0)
    return x_tr.mean(axis=0), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _standardize(x_tr, y_tr, x_va, y_va, x_te, y_te, stats: Optional[tuple] = None) -> tuple:
    mean, std = stats or _stats(x_tr)

    def scale(a):
        return ((a - mean) / std).astype(np.float32)

    return scale(x_tr), y_tr, scale(x_va), y_va, scale(x_te), y_te


def load_folder(cfg: Any) -> dict:
    """The splits of a `data=npy` or `data=array_record` folder, as sources."""
    from hpjax.data.sources import folder_sources

    try:
        splits = folder_sources(cfg.name, cfg.path)
    except (OSError, ValueError) as e:
        raise ConfigError("data.path", cfg.path, f"must be a {cfg.name} folder ({e})") from None
    if not splits:
        raise ConfigError("data.path", cfg.path, "holds none of the folders train/, val/, test/")
    return splits


# The data sets whose loading is hpjax's own code; every other config loads itself (`arrays()`).
_LOADERS = {Mnist1dDataConfig: load_mnist1d, NpzDataConfig: load_npz, CsvDataConfig: load_csv,
            NpyDataConfig: load_folder, ArrayRecordDataConfig: load_folder}

__all__ = ["Dataset", "Stream", "load", "write_array_record", "write_npy"]
