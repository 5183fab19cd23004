"""Checks every delivered batch and accounts for every produced row.

:class:`BatchChecker` validates each batch (number of blobs, dtype, trailing shape, exactly
``batch_size`` rows, intact row ids) and marks each row id as seen in one byte per row and
stream, so a row delivered twice is counted as a duplicate. After the run,
:meth:`BatchChecker.account` compares the ids seen with the rows each stream produced: rows
neither delivered nor still held by the pipeline were *lost*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .data import SEQ_MASK, STREAM_SHIFT, decode_ids

__all__ = ["Accounting", "BatchChecker", "BlobSpec"]


@dataclass(frozen=True)
class BlobSpec:
    """What every batch must hold for one blob: its dtype and the shape of one row."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Accounting:
    """Where the produced rows went.

    ``lost`` is ``produced - unique_delivered - held``: rows that were neither delivered nor
    still inside the pipeline when the run ended. ``held`` is what the pipeline itself said it
    still holds (0 for a pipeline that ended its stream, which flushes everything); when the
    pipeline cannot say (``held_known`` False), ``lost`` counts the held rows too.
    """

    produced: int
    delivered: int
    unique_delivered: int
    duplicates: int
    held: int
    held_known: bool
    lost: int
    batches: int
    bad_batches: int
    partial_batches: int
    corrupt_rows: int
    first_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Seen:
    """One byte per row id of one stream, grown by doubling."""

    __slots__ = ("bits", "count")

    def __init__(self) -> None:
        self.bits = np.zeros(1 << 16, np.uint8)
        self.count = 0

    def mark(self, seq: np.ndarray) -> int:
        """Mark ``seq`` as seen; return how many of them were seen before (or twice here)."""
        top = int(seq.max()) + 1
        if top > self.bits.shape[0]:
            size = self.bits.shape[0]
            while size < top:
                size *= 2
            grown = np.zeros(size, np.uint8)
            grown[: self.bits.shape[0]] = self.bits
            self.bits = grown
        before = self.bits[seq]
        repeats = int(np.count_nonzero(before))
        self.bits[seq] = 1
        fresh = seq[before == 0]
        if fresh.shape[0] > 1:
            # ids repeated inside this batch: all are fresh, yet marking sets one byte
            distinct = np.unique(fresh).shape[0]
            repeats += fresh.shape[0] - distinct
        else:
            distinct = fresh.shape[0]
        self.count += distinct
        return repeats


class BatchChecker:
    """Validates batches and tracks row ids.

    Args:
        blobs: the expected blobs, in order.
        batch_size: rows every batch must hold (a final flushed batch may hold fewer when
            ``check(..., final=True)``).
        id_blob: index of the blob that identifies rows.
        id_mode: ``"words"`` (ids are written into the rows, see ``data.encode_ids``) or
            ``"label"`` (the blob is an int64 vector of ids).
    """

    def __init__(
        self,
        blobs: Sequence[BlobSpec],
        batch_size: int,
        *,
        id_blob: int = 0,
        id_mode: str = "words",
    ) -> None:
        if id_mode not in ("words", "label"):
            raise ValueError(f"id_mode must be 'words' or 'label', got {id_mode!r}")
        self.blobs = tuple(blobs)
        self.batch_size = batch_size
        self.id_blob = id_blob
        self.id_mode = id_mode
        self._dtypes = tuple(np.dtype(b.dtype) for b in self.blobs)
        self._shapes = tuple(tuple(b.shape) for b in self.blobs)
        self._seen: dict[int, _Seen] = {}
        self.rows = 0
        self.batches = 0
        self.bad_batches = 0
        self.partial_batches = 0
        self.duplicates = 0
        self.corrupt_rows = 0
        self.first_error: str | None = None

    def check(self, arrays: Sequence[Any], *, final: bool = False) -> int:
        """Check one batch; return its row count (0 for a batch rejected outright).

        ``arrays`` holds one numpy array (or an object with ``.numpy()``, e.g. a CPU tensor)
        per blob. A malformed batch is counted and its first problem remembered; its ids
        still count when they can be read. ``final``: a partial batch is allowed (the
        pipeline flushed it at the end of the stream).
        """
        self.batches += 1
        if len(arrays) != len(self.blobs):
            return self._bad(f"batch has {len(arrays)} blobs, expected {len(self.blobs)}")
        arrays = [a if isinstance(a, np.ndarray) else np.asarray(a.numpy()) for a in arrays]
        rows = arrays[0].shape[0] if arrays[0].ndim else -1
        problem = None
        for i, (arr, dtype, shape) in enumerate(
            zip(arrays, self._dtypes, self._shapes, strict=True)
        ):
            if arr.dtype != dtype or arr.shape[1:] != shape or arr.ndim == 0:
                problem = (
                    f"blob {i}: got {arr.dtype}{list(arr.shape)}, "
                    f"expected {dtype}[N, {', '.join(map(str, shape))}]"
                )
                break
            if arr.shape[0] != rows:
                problem = f"blob {i}: {arr.shape[0]} rows, blob 0 has {rows}"
                break
        if problem is not None:
            return self._bad(problem)
        if rows != self.batch_size:
            if final and 0 < rows < self.batch_size:
                self.partial_batches += 1
            else:
                self._bad(f"batch has {rows} rows, expected exactly {self.batch_size}")
        self._mark(arrays[self.id_blob])
        self.rows += rows
        return rows

    def _bad(self, message: str) -> int:
        self.bad_batches += 1
        if self.first_error is None:
            self.first_error = message
        return 0

    def _mark(self, arr: np.ndarray) -> None:
        if self.id_mode == "words":
            ids, corrupt = decode_ids(arr)
            if corrupt:
                self.corrupt_rows += corrupt
                if self.first_error is None:
                    self.first_error = f"{corrupt} rows with a broken id check word"
        else:
            ids = arr.astype(np.int64, copy=False).reshape(-1)
        if ids.shape[0] == 0:
            return
        streams = ids >> STREAM_SHIFT
        first = int(streams[0])
        if first == int(streams[-1]) and not np.any(streams != first):
            self.duplicates += self._stream(first).mark(ids & SEQ_MASK)
            return
        for stream in np.unique(streams):
            seq = ids[streams == stream] & SEQ_MASK
            self.duplicates += self._stream(int(stream)).mark(seq)

    def _stream(self, stream: int) -> _Seen:
        seen = self._seen.get(stream)
        if seen is None:
            if stream < 0:
                raise ValueError(f"negative stream {stream}: ids are corrupt")
            seen = self._seen[stream] = _Seen()
        return seen

    @property
    def unique_rows(self) -> int:
        return sum(s.count for s in self._seen.values())

    def account(self, produced: Sequence[int], held: int | None) -> Accounting:
        """Compare the rows seen with ``produced`` (rows per stream) and ``held``.

        Rows seen beyond what a stream says it produced are counted as corrupt.
        """
        unique = 0
        corrupt = self.corrupt_rows
        for stream, seen in self._seen.items():
            made = produced[stream] if stream < len(produced) else 0
            beyond = int(np.count_nonzero(seen.bits[made:]))
            corrupt += beyond
            unique += seen.count - beyond
        total = int(sum(produced))
        held_rows = held if held is not None else 0
        return Accounting(
            produced=total,
            delivered=self.rows,
            unique_delivered=unique,
            duplicates=self.duplicates,
            held=held_rows,
            held_known=held is not None,
            lost=max(0, total - unique - held_rows),
            batches=self.batches,
            bad_batches=self.bad_batches,
            partial_batches=self.partial_batches,
            corrupt_rows=corrupt,
            first_error=self.first_error,
        )
