"""A batch: what the consumer receives, and where its rows come from (``provenance``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, final

import numpy as np

__all__ = ["Batch", "Provenance"]

#: Where a batch's rows come from: (epoch, index in the rank's dispatch order, position in
#: the epoch, first row, end row, rows of the key in all), one entry per key.
Provenance = tuple[tuple[int, int, int, int, int, int], ...]


@final
class Batch(Mapping[str, np.ndarray]):
    """One batch: a read-only mapping from blob name to array.

    Attributes:
        index: running index of the batch within its feed, from 0 (a resumed keyed feed
            goes on counting; a partial batch ``drop_last`` drops takes no index).
        rows: number of rows (``batch_size`` except for a flushed final batch or when
            rebatching is off).
        epoch: the epoch of a keyed feed's batch (batches never mix epochs); None for
            seed-style feeds.
        provenance: where its rows come from, one entry per key: ``(epoch, index, position,
            first row, end row, rows of the key)``; None for seed-style feeds.
    """

    __slots__ = ("_arrays", "epoch", "index", "provenance", "rows")

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        index: int,
        rows: int,
        provenance: Provenance | None = None,
    ) -> None:
        self._arrays: Final = arrays
        self.index: Final = index
        self.rows: Final = rows
        self.provenance: Final = provenance
        self.epoch: Final = provenance[0][0] if provenance else None

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"Batch(index={self.index}, rows={self.rows}, {{{shapes}}})"
