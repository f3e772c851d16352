"""Loading, splitting and standardising data sets, and the errors for bad files."""

import os

import numpy as np
import pytest

from helpers import compose_config
from hpjax import data as data_lib
from hpjax.config import ConfigError


def test_digits_split_is_stratified_fixed_and_standardised_from_train_only():
    ds = data_lib.load(compose_config().data)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (1257, 270, 270)
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    # every class in every split, in about the same share
    for y in (ds.y_train, ds.y_val, ds.y_test):
        share = np.bincount(y, minlength=10) / len(y)
        np.testing.assert_allclose(share, 0.1, atol=0.01)
    # train statistics only: train is standardised exactly, validation only approximately
    flat = ds.x_train.reshape(len(ds.x_train), -1)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
    varying = flat.std(0) > 0
    np.testing.assert_allclose(flat.std(0)[varying], 1, atol=1e-4)
    assert np.abs(ds.x_val.reshape(270, -1).mean(0)).max() > 0.05
    again = data_lib.load(compose_config().data)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    other = data_lib.load(compose_config(["data.split_seed=1"]).data)
    assert not np.array_equal(ds.y_test, other.y_test)


@pytest.mark.parametrize("name,n,features,classes", [
    ("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2)])
def test_builtin_sets(name, n, features, classes):
    ds = data_lib.load(compose_config([f"data={name}"]).data)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == n
    assert ds.input_shape == (features,) and ds.num_classes == classes


def test_synthetic_size_knobs():
    ds = data_lib.load(compose_config(["data=synthetic", "data.n_samples=1000",
                                       "data.n_features=12", "data.n_classes=4"]).data)
    assert len(ds.x_train) == 700 and ds.input_shape == (12,) and ds.num_classes == 4


def test_csv_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.csv"
    rows = ["f1,species,f2"] + [f"{a:.3f},{'cat' if a > 0 else 'dog'},{b:.3f}"
                                 for a, b in rng.normal(size=(60, 2))]
    path.write_text("\n".join(rows) + "\n")
    ds = data_lib.load(compose_config(["data=csv", f"data.path={path}",
                                       "data.label_column=species"]).data)
    assert ds.num_classes == 2 and ds.input_shape == (2,)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 60


def test_npz(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(100, 3, 2)), y=rng.integers(0, 3, 100))
    ds = data_lib.load(compose_config(["data=npz", f"data.path={path}"]).data)
    assert ds.input_shape == (6,) and ds.num_classes == 3


def test_bad_files_give_one_line_errors(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n1,2,x\n3,oops,y\n")
    with pytest.raises(ConfigError) as e:
        data_lib.load(compose_config(["data=csv", f"data.path={csv}"]).data)
    assert str(e.value) == f"data.path='{csv}': line 3, column 'b': 'oops' is not a number"
    with pytest.raises(ConfigError) as e:
        data_lib.load(compose_config(["data=csv", f"data.path={csv}",
                                      "data.label_column=target"]).data)
    assert str(e.value) == (f"data.label_column='target': must be one of the columns of {csv}: "
                            "a, b, label")
    npz = tmp_path / "d.npz"
    np.savez(npz, features=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(ConfigError) as e:
        data_lib.load(compose_config(["data=npz", f"data.path={npz}"]).data)
    assert str(e.value) == f"data.x_key='x': must be one of the arrays in {npz}: features, y"
    broken = tmp_path / "broken.npz"
    broken.write_text("not a zip file")
    with pytest.raises(ConfigError) as e:
        data_lib.load(compose_config(["data=npz", f"data.path={broken}"]).data)
    assert str(e.value).startswith(f"data.path='{broken}': must be a readable .npz file")


def test_loads_are_shared_until_the_file_changes(tmp_path):
    assert data_lib.load(compose_config().data) is data_lib.load(compose_config().data)
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    cfg = compose_config(["data=csv", f"data.path={path}"]).data
    first = data_lib.load(cfg)
    assert data_lib.load(cfg) is first
    path.write_text("a,b,label\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(40)))
    os.utime(path, ns=(1, 1))  # a new mtime, whatever the clock's resolution
    assert data_lib.load(cfg).input_shape == (2,)


def test_cv_folds_are_stratified_kfold_of_train_and_val_with_per_fold_scaling():
    from sklearn.model_selection import StratifiedKFold

    holdout = data_lib.load(compose_config(["data.standardize=false"]).data)
    ds = data_lib.load(compose_config(["data.cv_folds=5", "data.standardize=false"]).data)
    pool = len(holdout.y_train) + len(holdout.y_val)  # 1257 + 270
    assert ds.folds == 5 and ds.n_train == 1220 and ds.n_val == 305  # 1525 = 5 x 305 used
    assert ds.x_train.shape == (5, 1220, 8, 8, 1) and ds.x_test.shape == (5, 270, 8, 8, 1)
    assert pool - 5 * ds.n_val == 2  # pool mod k left out
    # exactly the folds scikit-learn's StratifiedKFold gives the same pool
    x = np.concatenate([holdout.x_train, holdout.x_val])[:1525].reshape(1525, -1)
    y = np.concatenate([holdout.y_train, holdout.y_val])[:1525]
    for i, (tr, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)):
        np.testing.assert_array_equal(ds.x_val[i].reshape(305, -1), x[va])
        np.testing.assert_array_equal(ds.y_train[i], y[tr])
        np.testing.assert_array_equal(ds.x_test[i], holdout.x_test)  # the test split stays out
    # every pooled sample validates exactly once
    assert len({row.tobytes() for row in ds.x_val.reshape(1525, -1)}) == len(
        {row.tobytes() for row in x})
    scaled = data_lib.load(compose_config(["data.cv_folds=5"]).data)
    for i in range(5):  # standardised with each fold's own training statistics
        flat = scaled.x_train[i].reshape(1220, -1)
        assert np.abs(flat.mean(0)).max() < 1e-5
        assert not np.allclose(scaled.x_test[i], scaled.x_test[(i + 1) % 5])


def test_cv_folds_needs_two_samples_per_fold():
    cfg = compose_config(["data=synthetic", "data.n_samples=30", "data.cv_folds=20"])
    with pytest.raises(ConfigError, match=r"^data.cv_folds=20: needs at least 2 samples per fold"):
        data_lib.load(cfg.data)


def test_mnist1d_is_generated_with_its_own_test_split_and_leaves_global_rngs_alone():
    import random

    np.random.seed(7)
    random.seed(7)
    expected = (np.random.random(), random.random())
    np.random.seed(7)
    random.seed(7)
    # 1,000 samples instead of 5,000: the generator takes about 1 ms a sample
    ds = data_lib.load(compose_config(["data=mnist1d", "data.n_samples=1000"]).data)
    assert (np.random.random(), random.random()) == expected
    # the package's 80/20 split: 800 train of which 15% validate, 200 test
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (680, 120, 200)
    assert ds.input_shape == (40, 1) and ds.num_classes == 10
    assert set(np.unique(ds.y_test)) == set(range(10))
    # the same generator seed gives the same signals
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 1000
    raw = make_dataset(args)
    assert np.array_equal(np.bincount(raw["y_test"], minlength=10),
                          np.bincount(ds.y_test, minlength=10))


def test_splits_are_scikit_learns_without_importing_it():
    """hpjax.data.holdout gives the indices of scikit-learn's train_test_split (shuffled, and
    stratified) and shuffled KFold / StratifiedKFold, sample for sample, over sizes, seeds and
    class balances (ties among the classes' remainders included)."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    from hpjax.data import holdout

    rng = np.random.default_rng(0)
    for n, classes, test_size, seed in ((150, 3, 0.3, 0), (1797, 10, 0.3, 1), (442, 2, 0.15, 7),
                                        (61, 5, 0.5, 3), (40, 2, 0.2, 42), (1527, 10, 0.5, 0)):
        y = rng.integers(0, classes, n) if n != 150 else np.repeat(np.arange(3), 50)
        for stratify in (None, y):
            tr, te = train_test_split(np.arange(n), test_size=test_size, random_state=seed,
                                      stratify=stratify)
            mine = holdout.train_test_split(n, test_size, seed, stratify)
            np.testing.assert_array_equal(mine[0], tr)
            np.testing.assert_array_equal(mine[1], te)
        k = 5
        for stratify, theirs in ((None, KFold(k, shuffle=True, random_state=seed)),
                                 (y, StratifiedKFold(k, shuffle=True, random_state=seed))):
            for (tr, va), (my_tr, my_va) in zip(theirs.split(np.zeros(n), y),
                                                holdout.kfold(n, k, seed, stratify), strict=True):
                np.testing.assert_array_equal(my_tr, tr)
                np.testing.assert_array_equal(my_va, va)
    with pytest.raises(ValueError, match="1 sample"):
        holdout.train_test_split(10, 0.3, 0, np.array([0] * 9 + [1]))


def test_scikit_learns_data_sets_are_read_as_its_loaders_give_them():
    """digits, iris, wine and breast_cancer come from scikit-learn's files without importing it:
    the same arrays, dtypes and values as its `load_<name>()`."""
    import sklearn.datasets

    from hpjax.config import data as data_config

    for name in ("digits", "iris", "wine", "breast_cancer"):
        x, y = data_config._bundled(name)
        bunch = getattr(sklearn.datasets, f"load_{name}")()
        for mine, theirs in ((x, bunch.data), (y, bunch.target)):
            assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, name
            np.testing.assert_array_equal(mine, theirs)
    assert data_config._bundled("diabetes") is None  # scaled by scikit-learn's code: its loader


@pytest.mark.parametrize("folds", [1, 3])
def test_several_regression_targets_keep_their_shape_and_count_samples(folds):
    """make_regression's n_targets=2: the targets are 2-D; features alone take the sample
    shape, and the sample counts are the samples', not the targets'."""
    cfg = compose_config(["task=regression", "data=make_regression", "data.n_samples=100",
                          "data.n_targets=2", f"data.cv_folds={folds}"])
    ds = data_lib.load(cfg.data, regression=True)
    lead = (folds,) if folds > 1 else ()
    assert ds.x_train.shape[-1] == 20 and ds.y_train.shape[-1] == 2
    assert ds.y_train.shape[:-1] == ds.x_train.shape[:-1] == (*lead, ds.n_train)
    assert ds.y_val.shape[:-1] == (*lead, ds.n_val) and ds.y_std.shape == (2,)
    pool = 100 - ds.y_test.shape[len(lead)]
    # folds of equal size: up to folds - 1 samples of the pool left out
    assert pool - (folds - 1) <= ds.n_train + ds.n_val <= pool
