"""The classic thread design: a reference re-implementation of Caffe2's ``data_workers``.

This is the design asyncfeed replaces, reproduced behaviour for behaviour so the benchmarks
compare against what users actually ran (Caffe2 itself no longer installs):

- ``num_worker_threads`` fetcher threads loop ``fetch_fun(worker_id, batch_size)`` and put
  each checked chunk into one ``queue.Queue(maxsize=max_buffered_batches)`` of chunks,
  retrying ``put(block=True, timeout=0.5)`` while it is full;
- one enqueuer thread takes chunks from that queue and grows the batch with ``np.append``
  (so a batch of ``n`` one-row chunks costs ``O(n²)`` copying) until it has at least
  ``batch_size`` rows, splits off the surplus with ``np.split`` and puts the leftover back at
  the *tail* of the chunk queue with ``put(block=False)``; **when the queue is full, the
  leftover rows are silently dropped** (Caffe2 catches ``Queue.Full`` and passes). Leftovers
  that do get back are reordered behind newer chunks;
- each full batch is enqueued into one bounded blobs queue per blob (capacity 4, Caffe2's
  ``_c2_queue_capacity``; ``SafeEnqueueBlobs`` blocks while full). :class:`BlobsQueue` here is a
  small stand-in with the same blocking and close semantics;
- ``stop()`` clears the active flag; threads notice at their next 0.5 s timeout, and rows in
  the chunk queue or a half-built batch are discarded.

Only instrumentation was added: :meth:`ClassicInput.held_rows` reports the rows a fetcher
thread has in hand, those waiting in the chunk queue and those in the enqueuer's half-built
batch, so the benchmark can tell rows *held* from rows *lost*.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["BlobsQueue", "ClassicInput"]

log = logging.getLogger("benchmarks.classic")
LOG_INT_SECS = 60

FetchFun = Callable[[int, int], Sequence[np.ndarray] | None]


class BlobsQueue:
    """Stand-in for Caffe2's BlobsQueue: bounded FIFO; ``close()`` wakes every waiter."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[np.ndarray] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closed = False

    def safe_enqueue(self, item: np.ndarray) -> bool:
        """Block while full; False once closed (``SafeEnqueueBlobs``' status output)."""
        with self._cond:
            while len(self._items) >= self._capacity and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def dequeue(self, timeout: float | None = None) -> np.ndarray | None:
        """The oldest record; None once closed and drained.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` while open.
        """
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("no batch")
                self._cond.wait(remaining)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ClassicInput:
    """One input source of the classic design: fetcher threads, a chunk queue, an enqueuer.

    Args:
        blob_names: blobs, in the order ``fetch_fun`` returns their arrays.
        fetch_fun: ``fetch_fun(worker_id, batch_size)`` → list of arrays, or None.
        batch_size: rows per batch.
        num_worker_threads: fetcher threads.
        max_buffered_batches: bound of the chunk queue (counted in chunks, as in Caffe2).
        dont_rebatch: pass chunks through as batches.
    """

    C2_QUEUE_CAPACITY = 4

    def __init__(
        self,
        blob_names: Sequence[str],
        fetch_fun: FetchFun,
        batch_size: int,
        *,
        num_worker_threads: int = 2,
        max_buffered_batches: int = 800,
        dont_rebatch: bool = False,
    ) -> None:
        self._blob_names = list(blob_names)
        self._fetch_fun = fetch_fun
        self._batch_size = batch_size
        self._dont_rebatch = dont_rebatch
        self._internal_queue: queue.Queue[list[np.ndarray]] = queue.Queue(
            maxsize=max_buffered_batches
        )
        self.queues = [BlobsQueue(self.C2_QUEUE_CAPACITY) for _ in self._blob_names]
        self._active = False
        self._cur_batch: list[np.ndarray] = []
        self._in_hand = 0
        self._hand_lock = threading.Lock()
        self._counter = 0
        self._inputs = 0
        self._prev_seconds = time.time()
        self._last_warning = time.time()
        self.metrics: dict[str, float] = {}
        self._threads = [
            threading.Thread(
                target=self._run_worker, args=(wid,), name=f"classic fetcher id {wid}", daemon=True
            )
            for wid in range(num_worker_threads)
        ]
        self._threads.append(
            threading.Thread(target=self._enqueuer, name="classic enqueuer", daemon=True)
        )

    # -- coordinator ---------------------------------------------------------------------------

    def is_active(self) -> bool:
        return self._active

    def start(self) -> None:
        self._active = True
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Clear the active flag, close the blobs queues, join; True when every thread ended."""
        self._active = False
        for q in self.queues:
            q.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def get_batch(self, timeout: float | None = None) -> list[np.ndarray] | None:
        """Dequeue one record from every blob's queue (the net's ``DequeueBlobs`` ops)."""
        out = []
        for q in self.queues:
            item = q.dequeue(timeout=timeout)
            if item is None:
                return None
            out.append(item)
        return out

    def held_rows(self) -> int:
        """Instrumentation: rows in fetchers' hands, in the chunk queue, in the half-built batch.

        Read upstream first, so a row moving on meanwhile is counted twice, never missed.
        """
        in_hand = self.rows_in_hand
        with self._internal_queue.mutex:
            queued = sum(c[0].shape[0] for c in self._internal_queue.queue)
        cur = self._cur_batch
        return int(in_hand + queued + (cur[0].shape[0] if cur else 0))

    @property
    def rows_in_hand(self) -> int:
        """Instrumentation: rows a fetcher returned and has not yet put into the queue."""
        with self._hand_lock:
            return self._in_hand

    def _put_metric(self, key: str, value: float) -> None:
        self.metrics[key] = self.metrics.get(key, 0.0) + value
        count = f"{key}_count"
        self.metrics[count] = self.metrics.get(count, 0.0) + 1

    # -- fetcher threads -----------------------------------------------------------------------

    def _run_worker(self, worker_id: int) -> None:
        while self.is_active():
            start = time.time()
            try:
                chunk = self._fetch_fun(worker_id, self._batch_size)
                rows = _rows(chunk)
                self._hold(rows)
                try:
                    self._put(chunk)
                finally:
                    self._hold(-rows)
            except Exception:
                log.exception("Exception in fetcher")
                self._active = False
            finally:
                self._put_metric("fetcher_time", time.time() - start)

    def _hold(self, rows: int) -> None:
        if rows:
            with self._hand_lock:
                self._in_hand += rows

    def _validate_chunk(self, chunk: Sequence[np.ndarray] | None) -> bool:
        if chunk is None:
            log.debug("Fetcher function returned None")
            return False
        assert len(chunk) == len(self._blob_names), "Expecting data blob for each input"
        for d in chunk:
            assert isinstance(d, np.ndarray), "Fetcher function must return a numpy array"
        if not self._dont_rebatch:
            for d in chunk[1:]:
                assert d.shape[0] == chunk[0].shape[0], (
                    "Each returned input must have equal number of samples"
                )
        return len(chunk) != 0

    def _put(self, chunk: Sequence[np.ndarray] | None) -> None:
        if not self._validate_chunk(chunk):
            return
        assert chunk is not None
        while self.is_active():
            try:
                qsize = self._internal_queue.qsize()
                if qsize < 2 and (time.time() - self._last_warning) > LOG_INT_SECS:
                    log.warning("Warning, data loading lagging behind: queue size=%d", qsize)
                    self._last_warning = time.time()
                self._counter += 1
                self._internal_queue.put(list(chunk), block=True, timeout=0.5)
                self._log_inputs_per_interval(chunk[0].shape[0])
                return
            except queue.Full:
                continue

    def _log_inputs_per_interval(self, inputs: int) -> None:
        self._inputs += inputs
        now = time.time()
        elapsed = now - self._prev_seconds
        if elapsed >= LOG_INT_SECS:
            log.info("%d inputs/sec", int(self._inputs / elapsed))
            self._inputs = 0
            self._prev_seconds = now

    # -- enqueuer thread -----------------------------------------------------------------------

    def _get(self) -> list[np.ndarray] | None:
        while self.is_active():
            try:
                return self._internal_queue.get(block=True, timeout=0.5)
            except queue.Empty:
                continue
        return None

    def _enqueuer(self) -> None:
        while self.is_active():
            self._enqueue_batch()

    def _enqueue_batch(self) -> None:
        if self._dont_rebatch:
            data = self._get()
            if data is not None and self.is_active():
                self._enqueue(data)
            return
        cur_batch: list[np.ndarray] = [np.array([]) for _ in self._blob_names]
        self._cur_batch = cur_batch
        while (
            cur_batch[0].shape[0] == 0 or cur_batch[0].shape[0] < self._batch_size
        ) and self.is_active():
            chunk = self._get()
            if chunk is None:
                continue
            for j, elem in enumerate(chunk):
                if cur_batch[j].shape[0] == 0:
                    cur_batch[j] = elem.copy()
                else:
                    cur_batch[j] = np.append(cur_batch[j], elem, axis=0)
        start = time.time()
        try:
            if cur_batch[0].shape[0] > self._batch_size:
                leftover = []
                trimmed = []
                for b in cur_batch:
                    head, tail = np.split(b, [self._batch_size], axis=0)
                    leftover.append(tail)
                    trimmed.append(head)
                cur_batch = trimmed
                try:
                    self._internal_queue.put(leftover, block=False)
                except queue.Full:
                    pass  # Caffe2 drops the leftover rows here
                assert cur_batch[0].shape[0] == self._batch_size
            if self.is_active():
                self._cur_batch = []
                self._enqueue(cur_batch)
        finally:
            self._put_metric("enqueue_time", time.time() - start)

    def _enqueue(self, batch: Sequence[np.ndarray]) -> None:
        for q, arr in zip(self.queues, batch, strict=True):
            q.safe_enqueue(arr)


def _rows(chunk: Sequence[np.ndarray] | None) -> int:
    try:
        return int(chunk[0].shape[0]) if chunk else 0
    except (AttributeError, IndexError, TypeError):
        return 0


def make_fetch_fun(fetch: Callable[[], Any]) -> FetchFun:
    """Adapt a no-argument chunk maker to the ``fetch_fun(worker_id, batch_size)`` signature."""

    def fetch_fun(worker_id: int, batch_size: int) -> Any:
        return fetch()

    return fetch_fun
