"""Counter-based rows: every row carries a unique id, so the consumer can find lost and
duplicated rows whatever the pipeline did to them.

A row id is ``stream << STREAM_SHIFT | seq``: a *stream* is one producing process (0 for the
benchmark's own process, 1 + worker index for a DataLoader worker), ``seq`` counts the rows
that stream produced, from 0 and without gaps. The first two int64 words of each row hold the
id and ``id ^ MAGIC``; the rest of the row is left as allocated, so making a chunk costs an
allocation and two strided writes, whatever its size.

The produced-row count of every stream lives in shared memory (:class:`Streams`), so the
consumer knows how many rows were produced even by forked worker processes, and a shared
*draining* flag tells every producer, in any process, to stop producing.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STREAM_SHIFT = 40
SEQ_MASK = (1 << STREAM_SHIFT) - 1
MAGIC = 0x5A5A_A5A5_0F0F_F0F0
MAX_STREAMS = 512
SMALL_CHUNK_BYTES = 64 << 10
BLOCK_ROWS = 4096

__all__ = [
    "MAGIC",
    "MAX_STREAMS",
    "RowSource",
    "RowSpec",
    "STREAM_SHIFT",
    "Streams",
    "decode_ids",
    "encode_ids",
]


@dataclass(frozen=True)
class RowSpec:
    """Shape of the rows a workload streams and of the chunks its fetchers return.

    ``min_rows`` / ``max_rows``: chunk sizes are drawn uniformly from that range (inclusive).
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    min_rows: int = 1
    max_rows: int = 1

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * int(np.prod(self.shape)))

    def __post_init__(self) -> None:
        if self.row_bytes % 8 or self.row_bytes < 16:
            raise ValueError(f"a row needs >= 16 bytes, a multiple of 8; got {self.row_bytes}")
        if not 1 <= self.min_rows <= self.max_rows:
            raise ValueError(f"bad chunk size range {self.min_rows}..{self.max_rows}")


def encode_ids(arr: np.ndarray, ids: np.ndarray) -> None:
    """Write ``ids`` (int64, one per row) and their check words into the rows of ``arr``."""
    words = arr.reshape(arr.shape[0], -1).view(np.int64)
    words[:, 0] = ids
    words[:, 1] = ids ^ MAGIC


def decode_ids(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """The ids of ``arr``'s rows and how many rows fail their check word."""
    rows = arr.shape[0]
    flat = np.ascontiguousarray(arr).reshape(rows, -1).view(np.int64)
    ids = flat[:, 0]
    bad = int(np.count_nonzero(flat[:, 1] != (ids ^ MAGIC)))
    return ids, bad


class Streams:
    """Shared-memory produced-row counters, one per stream, and the draining flag.

    Create it before any worker process starts (forked workers inherit it).
    """

    def __init__(self) -> None:
        self._counts = multiprocessing.RawArray("q", MAX_STREAMS)
        self._draining = multiprocessing.RawValue("b", 0)

    @property
    def draining(self) -> bool:
        return bool(self._draining.value)

    def drain(self) -> None:
        """Tell every producer to stop producing."""
        self._draining.value = 1

    def set_produced(self, stream: int, rows: int) -> None:
        self._counts[stream] = rows

    def produced(self) -> list[int]:
        """Rows produced so far, per stream (index = stream)."""
        return list(self._counts)


class RowSource:
    """Makes chunks of identifiable rows for one stream. Thread-safe.

    Args:
        spec: row shape, dtype and chunk-size range.
        streams: the shared counters this source reports to.
        stream: this source's stream number (unique per producing process).
        seed: chunk sizes are drawn from ``numpy.random.default_rng(seed + stream)``.
    """

    def __init__(self, spec: RowSpec, streams: Streams, stream: int = 0, seed: int = 0) -> None:
        if not 0 <= stream < MAX_STREAMS:
            raise ValueError(f"stream must be in [0, {MAX_STREAMS}), got {stream}")
        self.spec = spec
        self.streams = streams
        self.stream = stream
        self._base = stream << STREAM_SHIFT
        self._next = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed + stream)
        self._fixed = spec.min_rows if spec.min_rows == spec.max_rows else 0
        self._shape = spec.shape
        self._dtype = np.dtype(spec.dtype)
        # Small chunks are cut from blocks made (and id-stamped) BLOCK_ROWS at a time: a
        # fetch then costs a slice, not an allocation. Blocks are never reused, so a chunk's
        # memory is its own for as long as anything holds it.
        small = spec.row_bytes * spec.max_rows <= SMALL_CHUNK_BYTES
        self._block_rows = max(BLOCK_ROWS, 4 * spec.max_rows) if small else 0
        self._block: np.ndarray = np.empty((0, *spec.shape), self._dtype)
        self._block_pos = 0

    @property
    def draining(self) -> bool:
        return self.streams.draining

    def chunk(self) -> np.ndarray | None:
        """The next chunk (rows in id order), or None once the benchmark is draining."""
        if self.streams.draining:
            return None
        with self._lock:
            n = self._fixed or int(self._rng.integers(self.spec.min_rows, self.spec.max_rows + 1))
            start = self._next
            self._next = start + n
            self.streams.set_produced(self.stream, self._next)
            if self._block_rows:
                pos = self._block_pos
                if pos + n > self._block.shape[0]:
                    self._block = self._new_block(start, self._block_rows)
                    pos = 0
                self._block_pos = pos + n
                return self._block[pos : pos + n]
        return self._new_block(start, n)

    def _new_block(self, start: int, n: int) -> np.ndarray:
        arr = np.empty((n, *self._shape), self._dtype)
        first = self._base + start
        encode_ids(arr, np.arange(first, first + n, dtype=np.int64))
        return arr

    def rows(self) -> Sequence[np.ndarray] | None:
        """The next chunk as a sequence of rows (for pipelines that batch row by row)."""
        chunk = self.chunk()
        return None if chunk is None else list(chunk)
