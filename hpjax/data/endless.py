"""An endless training split that is iterated, not indexed: a `grain.IterDataset`, or any
iterable that starts anew at each `iter()`, read in its own order a block of batches at a time
(docs/data.md). Its place is the step reached and, where the source's iterator has Grain's
`get_state`/`set_state`, that iterator's state; else a resumed run iterates the source again
from its start and skips the records already read."""

import itertools
from collections import deque
from typing import Any

import grain

from hpjax.config import ConfigError


class Blocks(grain.IterDataset):
    """The blocks of `blocks` (a `hpjax.data.stream._Blocks` of the training split: its batch,
    block, steps per epoch and packing), each epoch `blocks.steps` steps."""

    def __init__(self, blocks: Any) -> None:
        super().__init__()
        self.blocks = blocks

    def __iter__(self) -> "_Iterator":
        return _Iterator(self.blocks)


class _Iterator(grain.DatasetIterator):
    def __init__(self, blocks: Any) -> None:
        super().__init__()
        self.blocks, self.step = blocks, 0
        self.records = iter(blocks.source)

    def __next__(self) -> tuple:
        b = self.blocks
        count = min(b.block, b.steps - self.step % b.steps)  # an epoch's last block: fewer
        pairs = list(itertools.islice(self.records, count * b.batch))
        if len(pairs) < count * b.batch:
            key, value = b.where.split("=", 1)
            raise ConfigError(key, value, "returned a train split without a length that ended "
                              f"after {self.step * b.batch + len(pairs)} records: an iterated "
                              "split must not end (give a random-access source to have epochs "
                              "of one pass)")
        self.step += count
        return b.pack_pairs(pairs)

    def get_state(self) -> dict:
        state: dict = {"step": self.step}
        if hasattr(self.records, "get_state"):
            state["source"] = self.records.get_state()
        return state

    def set_state(self, state: dict) -> None:
        self._close_records()
        self.records, self.step = iter(self.blocks.source), int(state["step"])
        if "source" in state:
            self.records.set_state(state["source"])
        else:  # no state to set: read again from the start, up to where it was
            deque(itertools.islice(self.records, self.step * self.blocks.batch), maxlen=0)

    def _close_records(self) -> None:
        if hasattr(self.records, "close"):
            self.records.close()

    def close(self) -> None:
        self._close_records()
        super().close()
