"""Caffe2's BlobsQueue in pure Python, and the one-queue-per-blob layout of ``data_workers``."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, final

import numpy as np

from ..attribution import WaitWatch
from ..errors import RecordError
from ..options import check_blobs, check_positive_int
from .closable_queue import ClosableQueue

__all__ = ["BlobsQueue", "BlobsQueueStats", "QueuePerBlob"]

Record = tuple[np.ndarray, ...]


def _nbytes(record: Record) -> int:
    return sum(a.nbytes for a in record)


@dataclass(frozen=True, slots=True)
class BlobsQueueStats:
    """A snapshot of a :class:`BlobsQueue`'s counters (Caffe2's BlobsQueueStats)."""

    size: int
    capacity: int
    enqueued: int
    dequeued: int
    bytes_enqueued: int
    bytes_dequeued: int
    closed: bool


@final
class BlobsQueue:
    """A bounded FIFO of records (one array per blob) with Caffe2's BlobsQueue semantics.

    - :meth:`safe_enqueue` blocks while the queue is full and open. It returns False once the
      queue is closed: unlike Caffe2, which still accepts a write into a closed queue that
      has room, a closed queue takes nothing more (a deliberate tightening).
    - :meth:`dequeue` returns the oldest record, or None once the queue is closed and drained:
      records enqueued before :meth:`close` stay readable, in order.
    - :meth:`close` is permanent and idempotent, and wakes every blocked reader and writer.
    - :meth:`dequeue_async` waits on an event loop without blocking it.

    As a feed's sink, ``put(batch)`` enqueues the batch's arrays in blob order.

    Raises:
        ConfigError: ``capacity`` or ``num_blobs`` is not an int >= 1.
    """

    __slots__ = ("_q", "num_blobs")

    def __init__(self, capacity: int, num_blobs: int) -> None:
        check_positive_int("capacity", capacity)
        self.num_blobs: Final = check_positive_int("num_blobs", num_blobs)
        self._q: Final[ClosableQueue[Record]] = ClosableQueue(capacity, _nbytes)

    def __repr__(self) -> str:
        state = "closed" if self._q.closed else "open"
        return (
            f"<BlobsQueue {len(self._q)}/{self._q.capacity} records of "
            f"{self.num_blobs} blobs, {state}>"
        )

    def __len__(self) -> int:
        return len(self._q)

    @property
    def capacity(self) -> int:
        return self._q.capacity

    @property
    def closed(self) -> bool:
        return self._q.closed

    def _record(self, blobs: Sequence[np.ndarray]) -> Record:
        if len(blobs) != self.num_blobs:
            raise RecordError(
                f"this BlobsQueue holds records of {self.num_blobs} blobs, got {len(blobs)}"
            )
        return tuple(blobs)

    def safe_enqueue(self, blobs: Sequence[np.ndarray]) -> bool:
        """Append one record, blocking while full; True when enqueued, False once closed.

        Raises:
            RecordError: ``blobs`` does not hold exactly ``num_blobs`` arrays.
        """
        return self._q.put(self._record(blobs))

    def try_enqueue(self, blobs: Sequence[np.ndarray]) -> bool:
        """Append one record if there is room now; False when full or closed.

        Raises:
            RecordError: ``blobs`` does not hold exactly ``num_blobs`` arrays.
        """
        return self._q.try_put(self._record(blobs))

    def put(self, batch: Mapping[str, np.ndarray]) -> bool:
        """Sink protocol: :meth:`safe_enqueue` the batch's arrays in blob order."""
        return self._q.put(self._record(tuple(batch.values())))

    def dequeue(self, *, timeout: float | None = None) -> Record | None:
        """The oldest record, blocking while empty; None once closed and drained.

        Raises:
            FeedTimeoutError: (a ``TimeoutError``) nothing within ``timeout`` s, queue open.
        """
        return self._q.get(timeout)

    async def dequeue_async(self) -> Record | None:
        """The oldest record, awaited on the running loop; None once closed and drained.

        Cancelling the wait loses no record. Wrap it in ``asyncio.timeout`` for a deadline.
        """
        return await self._q.aget()

    def close(self) -> None:
        """Close for good and wake every blocked reader and writer. Idempotent."""
        self._q.close()

    def watch(self, watch: WaitWatch | None, *, taken: bool = True) -> None:
        """Report every read that has to wait to ``watch`` (a feed attributes the waits) and,
        with ``taken``, every record read."""
        self._q.watch(watch, taken=taken)

    def stats(self) -> BlobsQueueStats:
        """A snapshot of the queue's size and counters."""
        size, puts, gets, bytes_in, bytes_out = self._q.counters()
        return BlobsQueueStats(
            size=size,
            capacity=self._q.capacity,
            enqueued=puts,
            dequeued=gets,
            bytes_enqueued=bytes_in,
            bytes_dequeued=bytes_out,
            closed=self._q.closed,
        )


@final
class QueuePerBlob:
    """A sink with one single-blob :class:`BlobsQueue` per blob, as Caffe2's ``data_workers``.

    ``put(batch)`` enqueues each blob's array into that blob's queue, in blob order, and
    returns False as soon as one of the queues is closed. It is all or nothing: a batch is
    written to the queues only once every one of them has room, so closing the sink while
    ``put`` waits never leaves part of a batch readable. ``queues[name].dequeue()`` returns
    a one-array record. Closing the sink closes every queue.

    Raises:
        ConfigError: invalid ``blobs`` or ``capacity``.
    """

    __slots__ = ("_lock", "queues")

    def __init__(self, blobs: Sequence[str], capacity: int = 4) -> None:
        self.queues: Final[Mapping[str, BlobsQueue]] = {
            name: BlobsQueue(capacity, 1) for name in check_blobs(blobs)
        }
        self._lock: Final = threading.Lock()  # commits of one batch vs close()

    def __repr__(self) -> str:
        return f"<QueuePerBlob {list(self.queues)}>"

    @property
    def closed(self) -> bool:
        return any(q.closed for q in self.queues.values())

    def put(self, batch: Mapping[str, np.ndarray]) -> bool:
        """Enqueue each blob into its queue; False once any queue is closed.

        Raises:
            RecordError: the batch's blobs are not the sink's.
        """
        if batch.keys() != self.queues.keys():
            raise RecordError(f"expected blobs {list(self.queues)}, got {list(batch)}")
        held: list[ClosableQueue[Record]] = []
        try:
            for q in self.queues.values():
                if not q._q.reserve():
                    return False
                held.append(q._q)
            with self._lock:
                if any(cq.closed for cq in held):
                    return False
                for name, cq in zip(self.queues, held, strict=True):
                    cq.commit((batch[name],))
                held.clear()
                return True
        finally:
            for cq in held:
                cq.release()

    def watch(self, watch: WaitWatch | None) -> None:
        """Report every read that has to wait to ``watch`` (a feed attributes the waits)."""
        queues = list(self.queues.values())
        for q in queues:  # a batch is taken when its last blob is
            q.watch(watch, taken=q is queues[-1])

    def close(self) -> None:
        """Close every queue, waking their readers and writers. Idempotent."""
        with self._lock:
            for q in self.queues.values():
                q.close()
