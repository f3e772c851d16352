"""scikit-learn's `train_test_split` and shuffled `KFold` / `StratifiedKFold` (optionally
stratified) as index arrays, in NumPy alone: the same samples in the same order as scikit-learn
gives for the same seed, so that data which is not scikit-learn's does not import it.

They follow `ShuffleSplit`, `StratifiedShuffleSplit`, `KFold` and `StratifiedKFold` of
scikit-learn 1.9; tests/test_data.py compares them with it over sizes, seeds and class balances.
"""

import math
from typing import Optional

import numpy as np


def train_test_split(n: int, test_size: float, seed: int,
                     stratify: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) sample indices of `n` samples, `test_size` (a fraction) of them held out.

    Raises:
      ValueError: a split that leaves a side empty, or (stratified) fewer samples on a side than
        classes, or a class of one sample.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} must be a fraction in (0, 1)")
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0 or n_test >= n:
        raise ValueError(f"with {n} samples and test_size={test_size} the train set is empty")
    rng = np.random.RandomState(seed)
    if stratify is None:
        order = rng.permutation(n)
        return order[n_test:], order[:n_test]
    classes, y_idx, counts = np.unique(stratify, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"class {classes[counts.argmin()]} has 1 sample; stratifying needs 2")
    if min(n_train, n_test) < len(classes):
        raise ValueError(f"{min(n_train, n_test)} samples cannot hold each of the "
                         f"{len(classes)} classes")
    by_class = np.split(np.argsort(y_idx, kind="stable"), np.cumsum(counts)[:-1])
    train_per_class = _approximate_mode(counts, n_train, rng)
    test_per_class = _approximate_mode(counts - train_per_class, n_test, rng)
    train, test = [], []
    for members, k, t in zip(by_class, train_per_class, test_per_class, strict=True):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:k])
        test.extend(shuffled[k:k + t])
    return rng.permutation(train), rng.permutation(test)


def kfold(n: int, k: int, seed: int,
          stratify: Optional[np.ndarray] = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) sample indices, ascending, of each of `k` shuffled folds of `n`
    samples; `stratify`: class labels of which every class has at least `k` samples."""
    rng = np.random.RandomState(seed)
    if stratify is None:
        order = np.arange(n)
        rng.shuffle(order)
        sizes = np.full(k, n // k)
        sizes[:n % k] += 1
        fold = np.empty(n, np.int64)
        fold[order] = np.arange(k).repeat(sizes)
    else:
        # classes numbered by first appearance, as StratifiedKFold does
        _, first, inverse = np.unique(stratify, return_index=True, return_inverse=True)
        _, rank = np.unique(first, return_inverse=True)
        label = rank[inverse]
        ordered = np.sort(label)
        allocation = np.asarray([np.bincount(ordered[i::k], minlength=len(first))
                                 for i in range(k)])
        fold = np.empty(n, np.int64)
        for c in range(len(first)):
            folds_of_class = np.arange(k).repeat(allocation[:, c])
            rng.shuffle(folds_of_class)
            fold[label == c] = folds_of_class
    everyone = np.arange(n)
    return [(everyone[fold != i], everyone[fold == i]) for i in range(k)]


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Samples per class when `draws` are drawn from classes of `counts`: each class's share
    floored, the rest going to the largest remainders (ties broken by `rng`)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    if missing > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), missing)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            missing -= now
            if missing == 0:
                break
    return floored.astype(int)
