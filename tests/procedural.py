"""A data set of any size that takes no memory, for streamed-data tests and benchmarks; light to
import, because Grain's worker processes import it to read records."""

import numpy as np


class Procedural:
    """`n` records of `features` numbers, made on each read from the record's index; the label
    is whether the first four sum above 0."""

    def __init__(self, n: int, features: int = 4096) -> None:
        self.n, self.features = n, features

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        x = np.random.default_rng(i).normal(size=self.features).astype(np.float32)
        return x, int(x[:4].sum() > 0)


def splits(n: int) -> dict:
    """`n` training records, n / 8 each for validation and test."""
    return {"train": Procedural(n), "val": Procedural(n // 8), "test": Procedural(n // 8)}
