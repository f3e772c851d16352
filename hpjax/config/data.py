"""Schemas of the `data` group: which samples, how they are split, and cross-validation."""

import os
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from hpjax.config._schema import ConfigError, Schema

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


def installed(module: str) -> bool:
    """Whether a package imports, without importing it (a sys.modules entry of None, as a test
    sets, reads as missing)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _numbers(value: Any) -> Any:
    """`value` as a 1-D float array of finite numbers; None if it is not one."""
    import numpy as np

    try:
        a = np.asarray(list(value) if isinstance(value, (list, tuple)) else value, np.float64)
    except (TypeError, ValueError):
        return None
    return a.reshape(-1) if a.ndim <= 1 and a.size and np.isfinite(a).all() else None


@dataclass
class DataConfig(Schema):
    group = "data"
    # Which loader: a scikit-learn set, `synthetic`, `mnist1d`, `npz`, `csv`, or the name of a
    # `_target_` function
    name: str = MISSING
    # Number of classes, for a model config to read as ${data.num_classes}; null: counted from
    # the labels. When set, the labels must be integers in [0, num_classes) or exactly that
    # many distinct values
    num_classes: Optional[int] = None
    # Share of all samples held out for validation (early stopping, the sweep objective)
    val_fraction: float = 0.15
    # Share of all samples held out for the final test metrics
    test_fraction: float = 0.15
    # Seed of the stratified train/validation/test split (fixed, independent of train.seed)
    split_seed: int = 0
    # Standardise every feature with the mean and std of the training split only
    standardize: bool = True
    # Shape of one sample as an image (height, width, channels), needed by model=cnn, or as a
    # signal (length, channels), needed by model=cnn1d
    image_shape: Optional[list[int]] = None
    # k >= 2: k-fold cross-validation (stratified) over the training and validation samples, the
    # folds trained side by side; the objective is the mean over folds. 1: one validation split
    cv_folds: int = 1
    # Stream the splits through Grain (docs/data.md) instead of placing them whole on the device:
    # true or false forces either; null streams sources (data=npy, data=array_record, a
    # `_target_` returning a dict of sources) of more than device_mb megabytes, all splits
    stream: Optional[bool] = None
    # null: the largest data (MB, all splits as float32) placed whole on the device
    device_mb: int = 1024
    # Streaming: steps per compiled call; the host reads and transfers the next block of batches
    # while the device trains on this one
    stream_block: int = 8
    # Streaming: worker processes reading records (0: threads of this process only)
    stream_workers: int = 0
    # Streaming: threads reading records (in each worker)
    stream_threads: int = 2
    # Streaming: blocks read ahead of the step that needs them (per worker)
    stream_buffer: int = 2
    # The features' mean and std for standardisation, one number or one per feature, given
    # instead of computed: no pass over the training split to take them (both or neither)
    mean: Optional[Any] = None
    std: Optional[Any] = None

    def __post_init__(self) -> None:
        self._check_fraction("val_fraction", low_open=True)
        self._check_fraction("test_fraction", low_open=True)
        self._check("test_fraction", self.val_fraction + self.test_fraction < 0.9,
                    "val_fraction + test_fraction must be < 0.9 "
                    f"(val_fraction={self.val_fraction})")
        self._check("cv_folds", self.cv_folds >= 1,
                    "must be an integer >= 1 (1: one validation split, no cross-validation)")
        if self.num_classes is not None:
            self._check("num_classes", self.num_classes >= 2, "must be an integer >= 2, or null")
        if self.image_shape is not None:
            self._check("image_shape",
                        len(self.image_shape) in (2, 3) and min(self.image_shape) >= 1,
                        "must be [height, width, channels] or [length, channels] of positive "
                        "integers, or null")
        self._check("device_mb", self.device_mb >= 0, "must be an integer >= 0 (megabytes)")
        self._check("stream_block", self.stream_block >= 1, "must be an integer >= 1 (steps)")
        self._check("stream_workers", self.stream_workers >= 0,
                    "must be an integer >= 0 (0: threads only)")
        self._check("stream_threads", self.stream_threads >= 0, "must be an integer >= 0")
        self._check("stream_buffer", self.stream_buffer >= 1, "must be an integer >= 1 (blocks)")
        if (self.mean is None) != (self.std is None):
            unset, given = ("std", "mean") if self.std is None else ("mean", "std")
            self._check(unset, False, f"must be given with data.{given} (both, or neither)")
        if self.mean is not None:
            self._check("mean", self.standardize, "is given with data.standardize=false: "
                        "set data.standardize=true to use it, or leave data.mean unset")
            for name in ("mean", "std"):
                self._check(name, _numbers(getattr(self, name)) is not None,
                            "must be a finite number or a list of them (one per feature)")
            self._check("std", bool((_numbers(self.std) > 0).all()), "must be > 0 everywhere")

    def arrays(self) -> Any:
        """(features, labels) of every sample, before the split; or a dict of ready splits,
        `{"x_train", "y_train", "x_test", "y_test"}` and optionally `"x_val", "y_val"`."""
        raise NotImplementedError


@dataclass
class SklearnDataConfig(DataConfig, choice="sklearn"):
    name: str = "digits"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("name", SKLEARN_DATASETS)

    def arrays(self) -> tuple:
        bundled = _bundled(self.name)
        if bundled is not None:
            return bundled
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{self.name}")()
        return bunch.data, bunch.target


# scikit-learn's own files of its data sets (sklearn/datasets/data/), read as its loaders read
# them: importing scikit-learn (and SciPy with it) takes longer than the rest of a cold run's data
# loading. diabetes (scaled by scikit-learn's code) goes through scikit-learn.
_FILES = {"digits": "digits.csv.gz", "iris": "iris.csv", "wine": "wine_data.csv",
          "breast_cancer": "breast_cancer.csv"}


def _bundled(name: str) -> Optional[tuple]:
    """(data, target) of scikit-learn's data set `name` as `load_<name>()` gives them, read from
    its file without importing scikit-learn; None where there is no such file (then its loader
    runs). tests/test_data.py compares them with scikit-learn's loaders."""
    import csv
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if name not in _FILES or spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", _FILES[name])
    if not os.path.isfile(path):
        return None
    if path.endswith(".gz"):  # load_gzip_compressed_csv_data: the target in the last column
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")
        return data[:, :-1], data[:, -1].astype(int, copy=False)
    with open(path, encoding="utf-8") as f:  # load_csv_data: a header row of counts and names
        rows = csv.reader(f)
        n, features = (int(v) for v in next(rows)[:2])
        data, target = np.empty((n, features)), np.empty((n,), dtype=int)
        for i, row in enumerate(rows):
            data[i] = np.asarray(row[:-1], dtype=np.float64)
            target[i] = np.asarray(row[-1], dtype=int)
    return data, target


@dataclass
class SyntheticDataConfig(DataConfig, choice="synthetic"):
    """`sklearn.datasets.make_classification`, for benchmarks and tests at any scale."""

    name: str = "synthetic"
    # Number of samples before the split
    n_samples: int = 2000
    # Number of features, of which n_informative carry the signal
    n_features: int = 20
    n_informative: int = 10
    # Linear combinations of the informative features
    n_redundant: int = 0
    n_classes: int = 3
    # Larger values make the classes easier to separate
    class_sep: float = 1.0
    # Share of labels flipped at random (label noise)
    flip_y: float = 0.01
    # Seed of the generator (the data itself, not the split)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_name()
        self._check("n_classes", self.n_classes >= 2, "must be an integer >= 2")
        self._check("n_samples", self.n_samples >= 10 * self.n_classes,
                    f"must be at least 10 * n_classes = {10 * self.n_classes}")
        self._check("n_informative", 1 <= self.n_informative <= self.n_features,
                    f"must be between 1 and n_features={self.n_features}")
        self._check("n_redundant", 0 <= self.n_redundant <= self.n_features - self.n_informative,
                    "must be between 0 and n_features - n_informative")
        self._check("n_classes", self.n_classes <= 2**self.n_informative,
                    f"must be <= 2**n_informative = {2**self.n_informative}")
        self._check_positive("class_sep")
        self._check_fraction("flip_y")

    def arrays(self) -> tuple:
        from sklearn.datasets import make_classification

        return make_classification(
            n_samples=self.n_samples, n_features=self.n_features,
            n_informative=self.n_informative, n_redundant=self.n_redundant,
            n_classes=self.n_classes, class_sep=self.class_sep, flip_y=self.flip_y,
            random_state=self.seed)


@dataclass
class MakeRegressionDataConfig(DataConfig, choice="make_regression"):
    """`sklearn.datasets.make_regression`: a noisy linear target of random features, for
    task=regression at any scale."""

    name: str = "make_regression"
    n_samples: int = 1000
    n_features: int = 20
    n_informative: int = 10
    # Targets per sample
    n_targets: int = 1
    # Standard deviation of the Gaussian noise on the targets
    noise: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_name()
        self._check("n_samples", self.n_samples >= 20, "must be an integer >= 20")
        self._check("n_informative", 1 <= self.n_informative <= self.n_features,
                    f"must be between 1 and n_features={self.n_features}")
        self._check("n_targets", self.n_targets >= 1, "must be an integer >= 1")
        self._check_non_negative("noise")

    def arrays(self) -> tuple:
        from sklearn.datasets import make_regression

        return make_regression(n_samples=self.n_samples, n_features=self.n_features,
                               n_informative=self.n_informative, n_targets=self.n_targets,
                               noise=self.noise, random_state=self.seed)


@dataclass
class Mnist1dDataConfig(DataConfig, choice="mnist1d"):
    """MNIST-1D (Greydanus, 2020): 40-point signals of ten digit templates, shifted, sheared and
    noised; generated on the machine by the `mnist1d` package (`pip install 'hpjax[mnist1d]'`).
    Its own split is kept: the first 80% train (with validation split off by
    `data.val_fraction`), the last 20% test."""

    name: str = "mnist1d"
    num_classes: Optional[int] = 10
    # Samples before the 80/20 train/test split (the paper's 5,000: 4,000 + 1,000)
    n_samples: int = 5000
    # Seed of the generator (the package's default, 42, makes the paper's data set)
    seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_name()
        self._check("n_samples", self.n_samples >= 100, "must be an integer >= 100")
        # checked here, with the config: a sweep stops before its first trial, not in each one
        if not installed("mnist1d"):
            raise ConfigError("data", self.name, "needs the mnist1d package: pip install "
                              "'hpjax[mnist1d]'")


@dataclass
class _FileDataConfig(DataConfig):
    # Path of the file (relative paths are relative to the directory hpjax was started in)
    path: str = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_name()
        self._check("path", os.path.exists(self.path), "file not found")
        self._check("path", not os.path.isdir(self.path), "is a directory, not a file")
        self._check("path", os.path.isfile(self.path), "not a regular file")
        try:
            with open(self.path, "rb") as f:
                f.read(1)
        except OSError as e:
            raise ConfigError("data.path", self.path, f"cannot be read ({type(e).__name__}: "
                              f"{e.strerror or e})") from None


@dataclass
class _FolderDataConfig(DataConfig):
    # Folder holding one subfolder per split: train/, val/, test/ (docs/data.md)
    path: str = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_name()
        self._check("path", os.path.isdir(self.path), "folder not found")
        self._check("num_classes", self.num_classes is not None,
                    "must be set: a streamed source is not read whole to count its labels")


@dataclass
class NpyDataConfig(_FolderDataConfig, choice="npy"):
    """Shards of `.npy` files per split (`x-00000.npy` with `y-00000.npy`, ...), memory-mapped:
    `hpjax.data.write_npy` writes them."""

    name: str = "npy"


@dataclass
class ArrayRecordDataConfig(_FolderDataConfig, choice="array_record"):
    """ArrayRecord files per split, one (x, y) record each, as `hpjax.data.write_array_record`
    writes them."""

    name: str = "array_record"


@dataclass
class NpzDataConfig(_FileDataConfig, choice="npz"):
    """A NumPy `.npz` file holding a feature array and a label array."""

    name: str = "npz"
    # Array of features, shape (samples, ...)
    x_key: str = "x"
    # Array of labels, shape (samples,)
    y_key: str = "y"


@dataclass
class CsvDataConfig(_FileDataConfig, choice="csv"):
    """A CSV file with a header row: one label column, every other column a numeric feature."""

    name: str = "csv"
    # Header name of the column that holds the class labels (numbers or strings)
    label_column: str = "label"
    delimiter: str = ","
