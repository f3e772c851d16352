"""Random-access sources of `(x, y)` records, for data streamed through Grain, and the writers of
the folders that `data=npy` and `data=array_record` read.

A source is anything with `__len__` and `__getitem__(i) -> (x, y)` (NumPy features of one sample
and its integer label); one that also has `__getitems__(indices) -> (xs, ys)` (the name PyTorch's
and ArrayRecord's sources use for a batched read) is read a batch at a time. Sources hold paths,
not data: each reading process opens its files itself, memory-mapped, so a worker's copy costs
nothing and the page cache, not the process, holds what was read.
"""

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
_META = "records.json"  # an ArrayRecord folder's record layout


class ArraySource:
    """Arrays already in memory, as a source (arrays streamed on request, tests, the bench)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: Sequence[int]) -> tuple:
        idx = np.asarray(idx)
        return self.x[idx], self.y[idx]


def _shards(folder: Path, prefix: str, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}-*{suffix}"))


class NpySource:
    """One split of a `data=npy` folder: `<path>/<split>/x-00000.npy` with `y-00000.npy`, ...,
    concatenated in name order and memory-mapped."""

    def __init__(self, path: str, split: str) -> None:
        folder = Path(path) / split
        self.xs, self.ys = _shards(folder, "x", ".npy"), _shards(folder, "y", ".npy")
        if [p.name[1:] for p in self.xs] != [p.name[1:] for p in self.ys]:
            raise ValueError(f"{folder}: every x-*.npy needs its y-*.npy and back")
        lengths = [len(np.load(p, mmap_mode="r")) for p in self.ys]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._maps: Any = None

    def __getstate__(self) -> dict:  # a worker opens its own maps
        return {**self.__dict__, "_maps": None}

    def _open(self) -> list:
        if self._maps is None:
            self._maps = [(np.load(x, mmap_mode="r"), np.load(y, mmap_mode="r"))
                          for x, y in zip(self.xs, self.ys, strict=True)]
        return self._maps

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple:
        if not 0 <= i < len(self):
            raise IndexError(i)
        shard = int(np.searchsorted(self.offsets, i, "right")) - 1
        x, y = self._open()[shard]
        j = i - self.offsets[shard]
        return np.asarray(x[j]), np.asarray(y[j])

    def __getitems__(self, idx: Sequence[int]) -> tuple:
        idx = np.asarray(idx, np.int64)
        shard = np.searchsorted(self.offsets, idx, "right") - 1
        maps = self._open()
        x0 = maps[0][0]
        xs = np.empty((len(idx), *x0.shape[1:]), x0.dtype)
        ys = np.empty(len(idx), maps[0][1].dtype)
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            x, y = maps[s]
            xs[at], ys[at] = x[idx[at] - self.offsets[s]], y[idx[at] - self.offsets[s]]
        return xs, ys


class ArrayRecordSource:
    """One split of a `data=array_record` folder: `<path>/<split>/*.array_record`, each record
    the label (int64, little-endian) then the features (`records.json` in `<path>` gives their
    shape and dtype)."""

    def __init__(self, path: str, split: str) -> None:
        from grain.sources import ArrayRecordDataSource

        meta = json.loads((Path(path) / _META).read_text())
        self.shape, self.dtype = tuple(meta["shape"]), np.dtype(meta["dtype"])
        files = sorted(str(p) for p in (Path(path) / split).glob("*.array_record"))
        self.records = ArrayRecordDataSource(files) if files else []

    def __len__(self) -> int:
        return len(self.records)

    def _decode(self, record: bytes) -> tuple:
        x = np.frombuffer(record, self.dtype, offset=8).reshape(self.shape)
        return x, np.frombuffer(record, "<i8", count=1)[0]

    def __getitem__(self, i: int) -> tuple:
        return self._decode(self.records[i])

    def __getitems__(self, idx: Sequence[int]) -> tuple:
        records = self.records.__getitems__(list(idx))
        ys = np.array([np.frombuffer(r, "<i8", count=1)[0] for r in records])
        xs = np.frombuffer(b"".join(r[8:] for r in records), self.dtype)
        return xs.reshape(len(records), *self.shape), ys


def _chunks(data: Any) -> Iterable[tuple]:
    """(x, y) chunks: `data` is one (x, y) pair or an iterable of them."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        return [data]
    return data


def write_npy(path: str, split: str, data: Any) -> int:
    """Writes one split of a `data=npy` folder, one shard per (x, y) chunk; returns the records.

    Args:
      path: the folder (`data.path`); the split goes into `<path>/<split>/`.
      split: train, val or test.
      data: an (x, y) pair of arrays, or an iterable of them (written chunk by chunk, so a data
        set larger than memory never is in memory whole).

    Examples:
      >>> import numpy as np, tempfile
      >>> d = tempfile.mkdtemp()
      >>> write_npy(d, "train", (np.zeros((6, 4), np.float32), np.arange(6) % 2))
      6
      >>> len(NpySource(d, "train"))
      6
    """
    folder = Path(path) / split
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for k, (x, y) in enumerate(_chunks(data)):
        np.save(folder / f"x-{k:05d}.npy", np.asarray(x))
        np.save(folder / f"y-{k:05d}.npy", np.asarray(y))
        n += len(y)
    return n


def write_array_record(path: str, split: str, data: Any, dtype: str = "float32") -> int:
    """Writes one split of a `data=array_record` folder, one ArrayRecord file per (x, y) chunk
    (one record per sample, readable a record at a time); returns the records.

    Args:
      path: the folder (`data.path`); `<path>/records.json` keeps the record layout.
      split: train, val or test.
      data: an (x, y) pair of arrays, or an iterable of them (written chunk by chunk).
      dtype: the features' stored type.

    Examples:
      >>> import numpy as np, tempfile
      >>> d = tempfile.mkdtemp()
      >>> write_array_record(d, "train", (np.ones((5, 3)), np.arange(5)))
      5
      >>> ArrayRecordSource(d, "train")[4][1]
      np.int64(4)
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    folder = Path(path) / split
    folder.mkdir(parents=True, exist_ok=True)
    n, shape = 0, None
    for k, (x, y) in enumerate(_chunks(data)):
        x = np.ascontiguousarray(x, dtype)
        if shape is not None and x.shape[1:] != shape:
            raise ValueError(f"chunk {k} holds records of shape {x.shape[1:]}, the first {shape}")
        shape = x.shape[1:]
        # group_size:1: every record can be read alone (random access in shuffled order)
        writer = ArrayRecordWriter(str(folder / f"part-{k:05d}.array_record"), "group_size:1")
        for xi, yi in zip(x, np.asarray(y, np.int64), strict=True):
            writer.write(yi.astype("<i8").tobytes() + xi.tobytes())
        writer.close()
        n += len(x)
    meta = Path(path) / _META
    if shape is not None:
        old = json.loads(meta.read_text()) if meta.exists() else None
        new = {"shape": list(shape), "dtype": np.dtype(dtype).name}
        if old not in (None, new):
            raise ValueError(f"{path}: the other splits hold records of {old}, this one {new}")
        meta.write_text(json.dumps(new))
    return n


def folder_sources(kind: str, path: str) -> dict:
    """The splits of a `data=npy` or `data=array_record` folder that exist, as sources."""
    cls = NpySource if kind == "npy" else ArrayRecordSource
    return {s: cls(path, s) for s in SPLITS if os.path.isdir(os.path.join(path, s))}
