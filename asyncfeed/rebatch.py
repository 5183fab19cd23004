"""Rebatching: chunks of any row count in, batches of exactly ``batch_size`` rows out.

Pure, synchronous numpy code (no asyncio, no threads), in the spirit of SPDL's
``Aggregator``. Rows leave in the order they arrived. Leftover rows are carried inside the
rebatcher, never pushed back into a queue. Each row is copied at most once, into a freshly
allocated batch buffer; when nothing is carried and a C-contiguous chunk holds a whole batch,
that batch is a view of the chunk and nothing is copied.

Batch buffers are recycled: a buffer the rebatcher made earlier is filled again once nothing
but the rebatcher references it (the consumer dropped the batch and every view of it), so a
steady stream keeps copying into the same few cache- and TLB-warm buffers instead of fresh
allocations. A batch the consumer still holds, or any view of it, is never overwritten.

Small chunks (at most :data:`SMALL_CHUNK_BYTES`) are carried as views until a batch is
complete and then copied with one ``numpy.concatenate(..., out=...)`` per blob, so a batch
made of many small chunks costs one call per blob instead of one slice assignment per chunk
and blob. Larger chunks are copied into the batch buffer as they arrive: the rebatcher never
holds on to a large chunk (it may be a view of a worker's shared memory, see ``wire.py``).
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import numpy as np

from .batch import Batch, Provenance
from .errors import ConfigError

__all__ = ["Allocate", "Rebatcher"]

#: Makes an empty batch buffer: ``(shape, dtype) -> array`` (``numpy.empty`` by default; a
#: CUDA ``TorchSink`` hands out pinned host memory, so its copy to the device needs no
#: staging).
Allocate = Callable[[tuple[int, ...], np.dtype[Any]], np.ndarray]

#: Chunks up to this many bytes (all blobs) are carried as views; larger ones are copied on
#: arrival. Matches ``wire.INLINE_MAX_BYTES``: smaller chunks never live in a worker's ring.
SMALL_CHUNK_BYTES: Final = 32 * 1024

#: Batch buffer sets kept for reuse: more than a feed keeps in flight (prefetched, in the
#: outbox, held by the consumer, being filled), so an idle one is usually among them.
RECYCLED_BATCHES: Final = 8

# Reuse is decided by reference counts, exact only where the GIL is on.
_RECYCLE: Final = bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def _most_refs(buffers: list[np.ndarray]) -> int:
    """The highest reference count among ``buffers``, as this interpreter counts it here."""
    return max(sys.getrefcount(b) for b in buffers)


# What ``_most_refs`` sees for arrays that only their list references: measured on this
# interpreter, not assumed, since interpreters differ in the temporary references they count
# (a count too low would let a buffer be refilled under a consumer's view).
_IDLE_REFS: Final = _most_refs([np.empty(0)])


@final
class Rebatcher:
    """Cuts chunks into batches of exactly ``batch_size`` rows.

    Args:
        blobs: blob names, in the order chunks hold their arrays.
        batch_size: rows per batch.
        rebatch: when False, every chunk becomes one batch as it is (Caffe2's
            ``dont_rebatch``).
        allocate: makes each new batch buffer (default ``numpy.empty``).
        track: record where each batch's rows come from (``Batch.provenance``); chunks are
            then pushed with their own provenance entry as a tag ``(epoch, index, position,
            first row, end row, rows of the key)``.
        first_index: the index of the first batch (a resumed feed goes on counting).
        sizes: batch size changes already decided, ``(first batch index, size)`` each (a
            resumed feed makes its batches as the run it resumes would have).

    Chunks passed to :meth:`push` must already be validated (see ``chunks.ChunkSchema``):
    one array per blob, equal first dimensions, a fixed dtype and trailing shape per blob.
    """

    __slots__ = (
        "_alloc",
        "_blobs",
        "_buffers",
        "_changes",
        "_cut_rows",
        "_fill",
        "_next_index",
        "_recycled",
        "_size",
        "_small",
        "_small_rows",
        "_tag_ends",
        "_tag_head",
        "_tag_rows",
        "_tags",
        "rebatch",
        "track",
    )

    def __init__(
        self,
        blobs: Sequence[str],
        batch_size: int,
        *,
        rebatch: bool = True,
        allocate: Allocate | None = None,
        track: bool = False,
        first_index: int = 0,
        sizes: Sequence[tuple[int, int]] = (),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._alloc: Final[Allocate] = allocate or np.empty
        self._blobs: Final = tuple(blobs)
        self._size = batch_size
        self._changes: list[tuple[int, int]] = sorted(sizes)  # (first batch index, size)
        self.rebatch: Final = rebatch
        self.track: Final = track
        # Tags in arrival order from _tag_head on, and the running row count at each one's end:
        # a batch's provenance is found by bisection and sliced off, never walked row by row.
        self._tags: list[tuple[int, int, int, int, int, int]] = []
        self._tag_ends: list[int] = []
        self._tag_head = 0
        self._tag_rows = 0  # rows tagged so far
        self._cut_rows = 0  # rows whose provenance went out with a batch
        self._buffers: list[np.ndarray] | None = None  # the batch being filled
        self._fill = 0  # rows already copied into it
        self._small: list[Sequence[np.ndarray]] = []  # small chunks carried as views, oldest first
        self._small_rows = 0
        self._next_index = first_index
        self._begin()
        self._recycled: list[list[np.ndarray]] = []  # buffers made here, most recent last

    @property
    def batch_size(self) -> int:
        """Rows of the batch being made."""
        return self._size

    def set_batch_size(self, batch_size: int) -> int:
        """Make batches of ``batch_size`` rows from the next batch started on; the rows
        carried are kept (the batch they started completes at the size it started with).
        Returns the index of the first batch of the new size."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = self._next_index + (self._fill > 0 or self._small_rows > 0)
        self._changes = [c for c in self._changes if c[0] < start]  # superseded
        self._changes.append((start, batch_size))
        self._begin()
        return start

    def _begin(self) -> None:
        """A batch starts (index ``_next_index``): apply the size changes due by then."""
        changes = self._changes
        while changes and changes[0][0] <= self._next_index:
            self._size = changes.pop(0)[1]

    @property
    def pending_rows(self) -> int:
        """Rows carried, waiting for more rows to complete a batch."""
        return self._fill + self._small_rows

    @property
    def batches_made(self) -> int:
        """Batches returned so far by :meth:`push` and :meth:`flush`."""
        return self._next_index

    def push(
        self, arrays: Sequence[np.ndarray], tag: tuple[int, int, int, int, int, int] | None = None
    ) -> list[Batch]:
        """Add one chunk; return the batches it completes (possibly none).

        A small chunk's arrays may be referenced (not copied) until the batch that holds its
        rows is returned: a fetcher must not write into an array it has returned.
        """
        rows = arrays[0].shape[0] if arrays else 0
        if rows == 0:
            return []
        if self.track:  # the tag is the chunk's provenance entry
            assert tag is not None
            self._tags.append(tag)
            self._tag_rows += rows
            self._tag_ends.append(self._tag_rows)
        if not self.rebatch:
            return [self._batch(arrays, rows)]
        out: list[Batch] = []
        nothing_carried = self._fill == 0 and self._small_rows == 0
        if nothing_carried and rows >= self._size and all(a.flags.c_contiguous for a in arrays):
            pos = 0
            while rows - pos >= (bs := self._size):
                out.append(self._batch([a[pos : pos + bs] for a in arrays], bs))
                pos += bs
                self._begin()
            if pos == rows:
                return out
            arrays = [a[pos:] for a in arrays]
            rows -= pos
        nbytes = 0
        for a in arrays:
            nbytes += a.nbytes
        if nbytes <= SMALL_CHUNK_BYTES:
            self._small.append(arrays)
            self._small_rows += rows
            while self._fill + self._small_rows >= self._size:
                self._copy_small(self._size - self._fill)
                out.append(self._take_full())
            return out
        pos = 0
        try:
            self._copy_small(self._small_rows)
            while pos < rows:
                buffers = self._buffers_for(arrays)
                take = min(self._size - self._fill, rows - pos)
                end = self._fill + take
                for buf, a in zip(buffers, arrays, strict=True):
                    buf[self._fill : end] = a[pos : pos + take]
                self._fill = end
                pos += take
                if end == self._size:
                    out.append(self._take_full())
        except BaseException:  # e.g. no memory for a batch: the uncopied rows stay carried
            self._small.append([a[pos:] for a in arrays])
            self._small_rows += rows - pos
            raise
        return out

    def flush(self) -> Batch | None:
        """Return the carried rows as a final, partial batch, or None when nothing is carried."""
        self._copy_small(self._small_rows)
        if self._fill == 0 or self._buffers is None:
            return None
        fill = self._fill
        batch = self._batch([b[:fill] for b in self._buffers], fill)
        self._buffers = None
        self._fill = 0
        self._begin()
        return batch

    def drop_partial(self) -> tuple[int, Provenance | None]:
        """Drop the carried rows as ``drop_last`` drops a partial batch: no batch, no index
        used; return how many rows were dropped and, when tracking, where they came from."""
        rows = self._fill + self._small_rows
        provenance = self._cut(rows) if self.track and rows else None
        self.discard()
        return rows, provenance

    def discard(self) -> int:
        """Drop the carried rows; return how many were dropped."""
        dropped = self._fill + self._small_rows
        self._buffers = None
        self._fill = 0
        self._small = []
        self._small_rows = 0
        self._tags = []
        self._tag_ends = []
        self._tag_head = self._tag_rows = self._cut_rows = 0
        self._begin()
        return dropped

    def _buffers_for(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The buffers of the batch being filled: an idle recycled set, or new ones."""
        buffers = self._buffers
        if buffers is not None:
            return buffers
        pool = self._recycled
        size = self._size
        for i, candidate in enumerate(pool):
            if candidate[0].shape[0] == size and _idle(candidate):
                del pool[i]
                pool.append(candidate)
                self._buffers = candidate
                return candidate
        buffers = self._buffers = self._allocate(arrays)
        if _RECYCLE:
            pool.append(buffers)
            if len(pool) > RECYCLED_BATCHES:
                del pool[0]
        return buffers

    def _copy_small(self, n: int) -> None:
        """Copy the ``n`` oldest carried small-chunk rows into the batch being filled."""
        if n == 0:
            return
        small = self._small
        buffers = self._buffers_for(small[0])  # may raise: nothing has moved yet
        taken: list[Sequence[np.ndarray]] = []
        need = n
        i = 0
        while need:
            arrays = small[i]
            rows = arrays[0].shape[0]
            if rows <= need:
                taken.append(arrays)
                need -= rows
                i += 1
            else:
                taken.append([a[:need] for a in arrays])
                small[i] = [a[need:] for a in arrays]
                need = 0
        del small[:i]
        self._small_rows -= n
        start, end = self._fill, self._fill + n
        for j, buf in enumerate(buffers):
            np.concatenate([t[j] for t in taken], out=buf[start:end])
        self._fill = end

    def _take_full(self) -> Batch:
        assert self._buffers is not None and self._fill == self._size
        batch = self._batch(self._buffers, self._fill)
        self._buffers = None
        self._fill = 0
        self._begin()
        return batch

    def _allocate(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """A fresh batch buffer per blob.

        Raises:
            ConfigError: ``batch_size`` rows of a blob do not fit in memory.
        """
        bs = self.batch_size
        buffers = []
        for name, a in zip(self._blobs, arrays, strict=True):
            try:
                buffers.append(self._alloc((bs, *a.shape[1:]), a.dtype))
            except (MemoryError, ValueError) as exc:  # ValueError: larger than the address space
                raise ConfigError(
                    f"batch_size={bs} is too large for blob {name!r} ({a.dtype} rows of shape "
                    f"{a.shape[1:]}, {a[:1].nbytes} bytes each): {exc}"
                ) from exc
        return buffers

    def _batch(self, arrays: Sequence[np.ndarray], rows: int) -> Batch:
        index = self._next_index
        self._next_index += 1
        provenance = self._cut(rows) if self.track else None
        return Batch(dict(zip(self._blobs, arrays, strict=True)), index, rows, provenance)

    def _cut(self, rows: int) -> Provenance:
        """The provenance of the next ``rows`` rows: the tags they span, in arrival order."""
        tags, ends, head = self._tags, self._tag_ends, self._tag_head
        end = self._cut_rows + rows
        self._cut_rows = end
        last = bisect.bisect_left(ends, end, head)  # the tag holding the batch's last row
        over = ends[last] - end  # rows of that tag left for the next batch
        if over == 0:
            out = tuple(tags[head : last + 1])
            head = last + 1
        else:
            epoch, index, position, first, stop, total = tags[last]
            split = stop - over
            out = (*tags[head:last], (epoch, index, position, first, split, total))
            tags[last] = (epoch, index, position, split, stop, total)
            head = last
        if head > 1024 and 2 * head > len(tags):  # drop what went out, now and then
            del tags[:head], ends[:head]
            head = 0
        self._tag_head = head
        return out


def _idle(buffers: list[np.ndarray]) -> bool:
    """True when only the recycling pool references these arrays (no batch, no view)."""
    return _most_refs(buffers) <= _IDLE_REFS
