"""Rebatching: chunks of any row count in, batches of exactly ``batch_size`` rows out.

Pure, synchronous numpy code (no asyncio, no threads), in the spirit of SPDL's
``Aggregator``. Rows leave in the order they arrived. Leftover rows are carried inside the
rebatcher, never pushed back into a queue. Each row is copied at most once, into a freshly
allocated batch buffer; when nothing is carried and a C-contiguous chunk holds a whole batch,
that batch is a view of the chunk and nothing is copied.

Carried rows are held as views of their chunks until a batch is complete; the batch is then
filled with one ``numpy.concatenate(..., out=buffer)`` per blob, so a batch made of many
small chunks costs one call per blob instead of one slice assignment per chunk and blob.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Final, final

import numpy as np

__all__ = ["Batch", "Rebatcher"]


@final
class Batch(Mapping[str, np.ndarray]):
    """One batch: a read-only mapping from blob name to array.

    Attributes:
        index: running index of the batch within its feed, from 0.
        rows: number of rows (``batch_size`` except for a flushed final batch or when
            rebatching is off).
    """

    __slots__ = ("_arrays", "index", "rows")

    def __init__(self, arrays: dict[str, np.ndarray], index: int, rows: int) -> None:
        self._arrays: Final = arrays
        self.index: Final = index
        self.rows: Final = rows

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"Batch(index={self.index}, rows={self.rows}, {{{shapes}}})"


@final
class Rebatcher:
    """Cuts chunks into batches of exactly ``batch_size`` rows.

    Args:
        blobs: blob names, in the order chunks hold their arrays.
        batch_size: rows per batch.
        rebatch: when False, every chunk becomes one batch as it is (Caffe2's
            ``dont_rebatch``).

    Chunks passed to :meth:`push` must already be validated (see ``chunks.ChunkSchema``):
    one array per blob, equal first dimensions, a fixed dtype and trailing shape per blob.
    """

    __slots__ = ("_blobs", "_next_index", "_pending", "_pending_rows", "batch_size", "rebatch")

    def __init__(self, blobs: Sequence[str], batch_size: int, *, rebatch: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._blobs: Final = tuple(blobs)
        self.batch_size: Final = batch_size
        self.rebatch: Final = rebatch
        # carried rows: views of the chunks they came in, oldest first
        self._pending: deque[Sequence[np.ndarray]] = deque()
        self._pending_rows = 0
        self._next_index = 0

    @property
    def pending_rows(self) -> int:
        """Rows carried, waiting for more rows to complete a batch."""
        return self._pending_rows

    @property
    def batches_made(self) -> int:
        """Batches returned so far by :meth:`push` and :meth:`flush`."""
        return self._next_index

    def push(self, arrays: Sequence[np.ndarray]) -> list[Batch]:
        """Add one chunk; return the batches it completes (possibly none).

        The chunk's arrays may be referenced (not copied) until the batches that hold their
        rows are returned: a fetcher must not write into an array it has returned.
        """
        rows = arrays[0].shape[0] if arrays else 0
        if rows == 0:
            return []
        if not self.rebatch:
            return [self._batch(arrays, rows)]
        bs = self.batch_size
        pending = self._pending_rows + rows
        if pending < bs:  # the common small-chunk case: just carry it
            self._pending.append(arrays)
            self._pending_rows = pending
            return []
        out: list[Batch] = []
        if self._pending_rows == 0 and all(a.flags.c_contiguous for a in arrays):
            pos = 0
            while rows - pos >= bs:
                out.append(self._batch([a[pos : pos + bs] for a in arrays], bs))
                pos += bs
            if pos == rows:
                return out
            if pos:
                arrays = [a[pos:] for a in arrays]
                rows -= pos
        self._pending.append(arrays)
        self._pending_rows += rows
        while self._pending_rows >= bs:
            out.append(self._cut(bs))
        return out

    def flush(self) -> Batch | None:
        """Return the carried rows as a final, partial batch, or None when nothing is carried."""
        if self._pending_rows == 0:
            return None
        return self._cut(self._pending_rows)

    def discard(self) -> int:
        """Drop the carried rows; return how many were dropped."""
        dropped = self._pending_rows
        self._pending.clear()
        self._pending_rows = 0
        return dropped

    def _cut(self, n: int) -> Batch:
        """A batch of the ``n`` oldest carried rows, copied into fresh buffers."""
        pending = self._pending
        taken: list[Sequence[np.ndarray]] = []
        need = n
        while need:
            arrays = pending[0]
            rows = arrays[0].shape[0]
            if rows <= need:
                taken.append(pending.popleft())
                need -= rows
            else:
                taken.append([a[:need] for a in arrays])
                pending[0] = [a[need:] for a in arrays]
                need = 0
        self._pending_rows -= n
        buffers = []
        for j in range(len(taken[0])):
            parts = [t[j] for t in taken]
            first = parts[0]
            buf = np.empty((n, *first.shape[1:]), dtype=first.dtype)
            np.concatenate(parts, out=buf)
            buffers.append(buf)
        return self._batch(buffers, n)

    def _batch(self, arrays: Sequence[np.ndarray], rows: int) -> Batch:
        index = self._next_index
        self._next_index += 1
        return Batch(dict(zip(self._blobs, arrays, strict=True)), index, rows)
