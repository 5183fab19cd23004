"""How a workload hands its data to the pipelines: a :class:`KeyedSource`.

Peers are written the way their documentation recommends: a source of keys (indices, URLs)
and a fetch function mapped over it with some concurrency, rows unbatched and re-batched by
the library. asyncfeed and the classic design call ``fetch`` directly (seed style) or map it
over the keys (``Feed.from_keys``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KeyedSource", "Row", "stack_rows"]

# One row: one array per blob (without the row dimension).
Row = tuple[Any, ...]  # arrays, or numpy scalars (a label)


@dataclass(frozen=True)
class KeyedSource:
    """A workload's data, in the shapes the pipelines need.

    Attributes:
        blobs: blob names.
        batch_size: rows per batch.
        keys: a fresh key iterator; it ends once the benchmark drains.
        fetch: ``fetch(key)`` → a chunk (one array per blob, equal first dimension) or None
            (nothing: the benchmark is draining). Blocking; safe from many threads.
        afetch: the same as a coroutine function, for async pipelines (None: not offered).
        worker_rows: ``worker_rows(worker, num_workers)`` → an iterator of rows for one
            DataLoader worker process (``worker`` = -1 in the main process), ending once the
            benchmark drains. Must be picklable.
    """

    blobs: tuple[str, ...]
    batch_size: int
    keys: Callable[[], Iterator[Any]]
    fetch: Callable[[Any], Sequence[np.ndarray] | None]
    afetch: Callable[[Any], Awaitable[Sequence[np.ndarray] | None]] | None
    worker_rows: Callable[[int, int], Iterator[Row]]

    def fetch_rows(self, key: Any) -> list[Row]:
        """``fetch`` unbatched into rows; [] when there is nothing."""
        chunk = self.fetch(key)
        return [] if chunk is None else list(zip(*chunk, strict=True))

    async def afetch_rows(self, key: Any) -> list[Row]:
        assert self.afetch is not None
        chunk = await self.afetch(key)
        return [] if chunk is None else list(zip(*chunk, strict=True))


def stack_rows(rows: Sequence[Row]) -> list[np.ndarray]:
    """Collate rows into one array per blob with ``numpy.stack``."""
    return [np.stack(col) for col in zip(*rows, strict=True)]
