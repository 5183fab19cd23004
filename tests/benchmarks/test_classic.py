"""The classic-design reference: exact batches, and the leftover rows Caffe2 dropped."""

from __future__ import annotations

import queue

import numpy as np

from benchmarks.checks import BatchChecker, BlobSpec
from benchmarks.classic import BlobsQueue, ClassicInput
from benchmarks.data import RowSource, RowSpec, Streams


def chunk(start: int, n: int) -> list[np.ndarray]:
    return [np.arange(start, start + n, dtype=np.int64)]


def test_leftover_rows_are_dropped_when_the_chunk_queue_is_full() -> None:
    ci = ClassicInput(["ids"], lambda w, b: None, 4, max_buffered_batches=1)
    ci._active = True  # drive the enqueuer by hand, no threads
    pending = [chunk(0, 6)]
    ci._get = lambda: pending.pop(0)  # type: ignore[method-assign]
    ci._internal_queue.put(chunk(100, 1))  # the fetchers keep the chunk queue full
    ci._enqueue_batch()
    ci._active = False
    batch = ci.get_batch(timeout=0)
    assert batch is not None and batch[0].tolist() == [0, 1, 2, 3]
    # rows 4 and 5 were the leftover: the full queue made them vanish
    assert ci.held_rows() == 1  # only the chunk the fetchers queued


def test_leftovers_go_behind_newer_chunks() -> None:
    ci = ClassicInput(["ids"], lambda w, b: None, 4, max_buffered_batches=8)
    ci._active = True
    ci._internal_queue.put(chunk(0, 5))
    ci._internal_queue.put(chunk(5, 4))
    ci._enqueue_batch()
    ci._enqueue_batch()
    ci._active = False
    batches = [ci.get_batch(timeout=0)[0].tolist() for _ in range(2)]  # type: ignore[index]
    assert batches == [[0, 1, 2, 3], [5, 6, 7, 8]]
    assert ci.held_rows() == 1  # row 4 now waits behind chunk(5, 4)'s successors


def test_threads_deliver_exact_batches_and_stop() -> None:
    streams = Streams()
    src = RowSource(RowSpec((4,), "float32", 1, 5), streams)
    ci = ClassicInput(
        ["x"],
        lambda w, b: None if (c := src.chunk()) is None else [c],
        8,
        num_worker_threads=2,
        max_buffered_batches=1000,
    )
    checker = BatchChecker([BlobSpec("float32", (4,))], 8)
    ci.start()
    try:
        for _ in range(20):
            batch = ci.get_batch(timeout=10)
            assert batch is not None
            checker.check(batch)
    finally:
        assert ci.stop(timeout=5)
    assert checker.bad_batches == 0 and checker.duplicates == 0


def test_blobs_queue_blocks_times_out_and_wakes_on_close() -> None:
    q = BlobsQueue(1)
    assert q.safe_enqueue(np.zeros(1))
    try:
        q.dequeue(timeout=0)
    except TimeoutError:  # pragma: no cover - there is an item
        raise AssertionError("an item was waiting") from None
    try:
        q.dequeue(timeout=0)
    except TimeoutError:
        pass
    else:  # pragma: no cover
        raise AssertionError("empty queue must time out")
    q.close()
    assert q.dequeue() is None and not q.safe_enqueue(np.zeros(1))


def test_queue_full_is_what_drops_rows() -> None:
    q: queue.Queue[int] = queue.Queue(maxsize=1)
    q.put(1)
    try:
        q.put(2, block=False)
    except queue.Full:
        pass
    assert q.qsize() == 1
