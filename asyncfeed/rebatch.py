"""Rebatching: chunks of any row count in, batches of exactly ``batch_size`` rows out.

Pure, synchronous numpy code (no asyncio, no threads), in the spirit of SPDL's
``Aggregator``. Rows leave in the order they arrived. Leftover rows are carried inside the
rebatcher, never pushed back into a queue. Each row is copied at most once, into a freshly
allocated batch buffer; when nothing is carried and a C-contiguous chunk holds a whole batch,
that batch is a view of the chunk and nothing is copied.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final, final

import numpy as np

from .errors import ConfigError

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

    __slots__ = ("_blobs", "_buffers", "_fill", "_next_index", "batch_size", "rebatch")

    def __init__(self, blobs: Sequence[str], batch_size: int, *, rebatch: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._blobs: Final = tuple(blobs)
        self.batch_size: Final = batch_size
        self.rebatch: Final = rebatch
        self._buffers: list[np.ndarray] | None = None
        self._fill = 0
        self._next_index = 0

    @property
    def pending_rows(self) -> int:
        """Rows carried, waiting for more rows to complete a batch."""
        return self._fill

    @property
    def batches_made(self) -> int:
        """Batches returned so far by :meth:`push` and :meth:`flush`."""
        return self._next_index

    def push(self, arrays: Sequence[np.ndarray]) -> list[Batch]:
        """Add one chunk; return the batches it completes (possibly none)."""
        rows = arrays[0].shape[0] if arrays else 0
        if rows == 0:
            return []
        if not self.rebatch:
            return [self._batch(arrays, rows)]
        bs = self.batch_size
        out: list[Batch] = []
        pos = 0
        if self._fill == 0 and rows >= bs and all(a.flags.c_contiguous for a in arrays):
            while rows - pos >= bs:
                out.append(self._batch([a[pos : pos + bs] for a in arrays], bs))
                pos += bs
        while pos < rows:
            buffers = self._buffers
            if buffers is None:
                buffers = self._buffers = self._allocate(arrays)
            take = min(bs - self._fill, rows - pos)
            end = self._fill + take
            for buf, a in zip(buffers, arrays, strict=True):
                buf[self._fill : end] = a[pos : pos + take]
            self._fill = end
            pos += take
            if end == bs:
                out.append(self._batch(buffers, bs))
                self._buffers = None
                self._fill = 0
        return out

    def flush(self) -> Batch | None:
        """Return the carried rows as a final, partial batch, or None when nothing is carried."""
        if self._fill == 0 or self._buffers is None:
            return None
        fill = self._fill
        batch = self._batch([b[:fill] for b in self._buffers], fill)
        self._buffers = None
        self._fill = 0
        return batch

    def discard(self) -> int:
        """Drop the carried rows; return how many were dropped."""
        dropped = self._fill
        self._buffers = None
        self._fill = 0
        return dropped

    def _allocate(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """A fresh batch buffer per blob.

        Raises:
            ConfigError: ``batch_size`` rows of a blob do not fit in memory.
        """
        bs = self.batch_size
        buffers = []
        for name, a in zip(self._blobs, arrays, strict=True):
            try:
                buffers.append(np.empty((bs, *a.shape[1:]), dtype=a.dtype))
            except (MemoryError, ValueError) as exc:  # ValueError: larger than the address space
                raise ConfigError(
                    f"batch_size={bs} is too large for blob {name!r} ({a.dtype} rows of shape "
                    f"{a.shape[1:]}, {a[:1].nbytes} bytes each): {exc}"
                ) from exc
        return buffers

    def _batch(self, arrays: Sequence[np.ndarray], rows: int) -> Batch:
        index = self._next_index
        self._next_index += 1
        return Batch(dict(zip(self._blobs, arrays, strict=True)), index, rows)
