"""BlobsQueue: Caffe2's BlobsQueue semantics, case by case, with real threads and asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.sinks import BlobsQueue, QueuePerBlob

# A correct writer never completes while the queue is full; this long a wait proves a bug
# (it is never waited on to synchronise anything).
STILL_BLOCKED_S = 0.2


def record(i: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([i], np.int64), np.full((1, 2), i, np.float32)


def spawn(target: Callable[[], object], name: str) -> tuple[threading.Thread, list[object]]:
    """Run ``target`` on a thread; its result lands in the returned list."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(target()), name=name)
    thread.start()
    return thread, out


def test_fifo_keeps_content_and_order() -> None:
    q = BlobsQueue(capacity=3, num_blobs=2)
    assert all(q.safe_enqueue(record(i)) for i in range(3))
    assert len(q) == 3
    for i in range(3):
        got = q.dequeue(timeout=1)
        assert got is not None
        ids, x = got
        assert ids.tolist() == [i] and x.tolist() == [[i, i]]
    assert len(q) == 0


@pytest.mark.parametrize("blobs", [0, 1, 3])
def test_wrong_blob_count_is_refused(blobs: int) -> None:
    q = BlobsQueue(capacity=2, num_blobs=2)
    arrays = [np.zeros(1)] * blobs
    with pytest.raises(
        af.RecordError, match=rf"^this BlobsQueue holds records of 2 blobs, got {blobs}$"
    ):
        q.safe_enqueue(arrays)
    with pytest.raises(af.RecordError):
        q.try_enqueue(arrays)
    assert len(q) == 0 and q.stats().enqueued == 0


@pytest.mark.parametrize(
    ("capacity", "num_blobs", "message"),
    [
        (0, 1, r"^capacity must be >= 1, got 0$"),
        (1, 0, r"^num_blobs must be >= 1, got 0$"),
        (1.5, 1, r"^capacity must be an int, got 1.5$"),
    ],
)
def test_invalid_construction(capacity: object, num_blobs: object, message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        BlobsQueue(capacity, num_blobs)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_writer_blocks_while_full_and_resumes_after_a_read() -> None:
    q = BlobsQueue(capacity=2, num_blobs=2)
    assert q.safe_enqueue(record(0)) and q.safe_enqueue(record(1))
    assert not q.try_enqueue(record(99))  # full: a non-blocking write is refused
    wrote = threading.Event()

    def write() -> bool:
        ok = q.safe_enqueue(record(2))
        wrote.set()
        return ok

    writer, result = spawn(write, "writer")
    assert not wrote.wait(STILL_BLOCKED_S)
    first = q.dequeue(timeout=1)
    assert first is not None and first[0].tolist() == [0]
    writer.join(5)
    assert result == [True]
    assert [r[0].tolist() for r in (q.dequeue(timeout=0), q.dequeue(timeout=0))] == [[1], [2]]  # type: ignore[index]


@pytest.mark.timeout(10)
def test_close_wakes_blocked_writers_with_false_and_blocked_readers_with_none() -> None:
    full = BlobsQueue(capacity=1, num_blobs=2)
    full.safe_enqueue(record(0))
    empty = BlobsQueue(capacity=1, num_blobs=2)
    gate = threading.Barrier(7)

    def write() -> bool:
        gate.wait()
        return full.safe_enqueue(record(1))

    def read() -> object:
        gate.wait()
        return empty.dequeue()

    threads = [spawn(write, f"writer-{i}") for i in range(3)]
    threads += [spawn(read, f"reader-{i}") for i in range(3)]
    gate.wait()
    threads[0][0].join(STILL_BLOCKED_S)
    assert all(t.is_alive() for t, _ in threads)  # every one of them is blocked
    full.close()
    empty.close()
    for thread, _ in threads:
        thread.join(5)
    assert [out for _, out in threads] == [[False]] * 3 + [[None]] * 3
    # the record enqueued before close() is still there; nothing was added after it
    got = full.dequeue(timeout=1)
    assert got is not None and got[0].tolist() == [0]
    assert full.dequeue(timeout=1) is None


def test_records_enqueued_before_close_stay_readable_in_order() -> None:
    q = BlobsQueue(capacity=4, num_blobs=2)
    for i in range(3):
        q.safe_enqueue(record(i))
    q.close()
    q.close()  # idempotent
    assert q.closed
    assert not q.safe_enqueue(record(9))  # unlike Caffe2: no write into a closed queue
    assert not q.try_enqueue(record(9))
    drained = [q.dequeue(timeout=1) for _ in range(3)]
    assert [r[0].tolist() for r in drained if r is not None] == [[0], [1], [2]]
    assert q.dequeue() is None  # closed and drained: None at once, never blocks
    assert q.dequeue(timeout=0) is None


@pytest.mark.timeout(10)
def test_timeout_on_an_open_empty_queue() -> None:
    q = BlobsQueue(capacity=1, num_blobs=2)
    with pytest.raises(TimeoutError, match=r"^nothing to read within 0\.05 s$"):
        q.dequeue(timeout=0.05)
    with pytest.raises(af.FeedTimeoutError):
        q.dequeue(timeout=0)
    q.safe_enqueue(record(5))  # nothing was lost or consumed by the timeouts
    got = q.dequeue(timeout=0)
    assert got is not None and got[0].tolist() == [5]


@pytest.mark.timeout(30)
def test_many_producers_and_consumers_lose_and_duplicate_nothing() -> None:
    q = BlobsQueue(capacity=3, num_blobs=2)
    producers, consumers, per_producer = 4, 4, 400
    seen: list[list[int]] = [[] for _ in range(consumers)]

    def produce(p: int) -> None:
        for i in range(per_producer):
            assert q.safe_enqueue(record(p * 100_000 + i))

    def consume(c: int) -> None:
        while (got := q.dequeue(timeout=10)) is not None:
            ids, x = got
            assert x[0, 0] == ids[0]  # the blobs of one record stay together
            seen[c].append(int(ids[0]))

    workers = [threading.Thread(target=consume, args=(c,), name=f"c{c}") for c in range(consumers)]
    writers = [threading.Thread(target=produce, args=(p,), name=f"p{p}") for p in range(producers)]
    for t in workers + writers:
        t.start()
    for t in writers:
        t.join(20)
    q.close()
    for t in workers:
        t.join(20)
    everything = sorted(i for ids in seen for i in ids)
    assert everything == sorted(
        p * 100_000 + i for p in range(producers) for i in range(per_producer)
    )
    for ids in seen:  # FIFO: each consumer sees each producer's records in order
        for p in range(producers):
            mine = [i for i in ids if i // 100_000 == p]
            assert mine == sorted(mine)
    stats = q.stats()
    assert stats.enqueued == stats.dequeued == producers * per_producer
    assert stats.size == 0 and stats.closed


def test_stats_count_records_and_bytes() -> None:
    q = BlobsQueue(capacity=4, num_blobs=2)
    per_record = sum(a.nbytes for a in record(0))
    for i in range(3):
        q.safe_enqueue(record(i))
    q.dequeue()
    stats = q.stats()
    assert (stats.size, stats.capacity, stats.enqueued, stats.dequeued) == (2, 4, 3, 1)
    assert stats.bytes_enqueued == 3 * per_record
    assert stats.bytes_dequeued == per_record
    assert not stats.closed
    assert repr(q) == "<BlobsQueue 2/4 records of 2 blobs, open>"


async def test_dequeue_async_waits_without_blocking_the_loop() -> None:
    q = BlobsQueue(capacity=2, num_blobs=2)
    reader = asyncio.create_task(q.dequeue_async())
    other = asyncio.Event()

    async def runs_meanwhile() -> None:
        other.set()

    await asyncio.create_task(runs_meanwhile())  # the loop is free while the reader waits
    assert other.is_set() and not reader.done()
    writer = threading.Thread(target=q.safe_enqueue, args=(record(3),), name="writer")
    writer.start()
    got = await asyncio.wait_for(reader, 5)
    writer.join(5)
    assert got is not None and got[0].tolist() == [3]


async def test_cancelled_async_reader_loses_no_record() -> None:
    q = BlobsQueue(capacity=4, num_blobs=2)
    first = asyncio.create_task(q.dequeue_async())
    second = asyncio.create_task(q.dequeue_async())
    await asyncio.sleep(0)  # both are parked
    q.safe_enqueue(record(1))  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs: the wake-up passes to `second`
    with pytest.raises(asyncio.CancelledError):
        await first
    got = await asyncio.wait_for(second, 5)
    assert got is not None and got[0].tolist() == [1]
    assert len(q) == 0


async def test_close_wakes_async_readers_with_none_after_the_drain() -> None:
    q = BlobsQueue(capacity=2, num_blobs=2)
    readers = [asyncio.create_task(q.dequeue_async()) for _ in range(3)]
    await asyncio.sleep(0)
    closer = threading.Thread(target=q.close, name="closer")
    closer.start()
    results = await asyncio.wait_for(asyncio.gather(*readers), 5)
    closer.join(5)
    assert results == [None, None, None]
    q2 = BlobsQueue(capacity=2, num_blobs=2)
    q2.safe_enqueue(record(8))
    q2.close()
    got = await q2.dequeue_async()
    assert got is not None and got[0].tolist() == [8]
    assert await q2.dequeue_async() is None


def test_queue_per_blob_splits_a_batch_and_closes_together() -> None:
    sink = QueuePerBlob(["ids", "x"], capacity=2)
    ids, x = record(4)
    assert sink.put({"ids": ids, "x": x})
    got_ids, got_x = sink.queues["ids"].dequeue(timeout=0), sink.queues["x"].dequeue(timeout=0)
    assert got_ids is not None and got_x is not None
    assert got_ids[0] is ids and got_x[0] is x  # handed over, not copied
    with pytest.raises(af.RecordError, match=r"^expected blobs \['ids', 'x'\], got \['x'\]$"):
        sink.put({"x": x})
    sink.queues["x"].close()  # a reader closing one queue closes the sink for the writer
    assert sink.closed
    assert not sink.put({"ids": ids, "x": x})
    sink.close()
    assert all(q.closed for q in sink.queues.values())
