"""The sink handoff: batches cross from the feed's loop to a blocking sink on one thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.sinks import Sink
from tests.conftest import CounterSource, check_accounting

STOP_BOUND_S = 2.0


class SpySink:
    """Wraps a sink: counts put() calls, reports each on entry, remembers the calling thread."""

    def __init__(
        self,
        inner: Sink,
        *,
        on_put: Callable[[int], object] = lambda n: None,
        fail_on: int = 0,
    ) -> None:
        self.inner = inner
        self.on_put = on_put
        self.fail_on = fail_on
        self.calls = 0
        self.threads: set[str] = set()

    def put(self, batch: Mapping[str, np.ndarray]) -> bool:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        self.on_put(self.calls)
        if self.calls == self.fail_on:
            raise OSError("disk full")
        return self.inner.put(batch)

    def close(self) -> None:
        self.inner.close()

    @property
    def closed(self) -> bool:
        return self.inner.closed


def on_call(n: int, event: threading.Event) -> Callable[[int], object]:
    """An on_put hook that sets ``event`` when put() is entered for the ``n``-th time."""
    return lambda calls: event.set() if calls == n else None


def sink_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-sink")]


def drain(q: af.BlobsQueue) -> list[tuple[np.ndarray, ...]]:
    """Every record until the queue is closed and drained."""
    out = []
    while (record := q.dequeue(timeout=10)) is not None:
        out.append(record)
    return out


@pytest.mark.timeout(20)
def test_sink_feed_delivers_exact_batches_every_row_once_in_order(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(7)

    q = af.BlobsQueue(capacity=3, num_blobs=2)
    spy = SpySink(q)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1, sink=spy)
    feed.start()
    ids: list[int] = []
    for _ in range(60):
        record = q.dequeue(timeout=10)
        assert record is not None
        batch_ids, x = record
        assert batch_ids.shape == (8,) and x.shape == (8, 4)
        assert np.array_equal(x, np.repeat(batch_ids.astype(np.float32)[:, None], 4, axis=1))
        ids.extend(batch_ids.tolist())
    feed.stop()
    assert spy.threads == {"asyncfeed-train-sink"}
    assert not sink_threads()
    rest = drain(q)  # accepted before the stop: still readable, then the end
    ids.extend(i for record in rest for i in record[0].tolist())
    assert ids == list(range(len(ids)))
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_delivered == len(ids) and stats.batches_delivered == len(ids) // 8
    assert stats.rows_in_flight == 0 and stats.rows_handing == 0


async def test_the_loop_runs_while_the_sink_blocks(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(1)

    loop = asyncio.get_running_loop()
    entered = {2: asyncio.Event(), 3: asyncio.Event()}
    q = af.BlobsQueue(capacity=1, num_blobs=2)  # nobody reads: the second put blocks
    spy = SpySink(q, on_put=lambda n: n in entered and loop.call_soon_threadsafe(entered[n].set))
    feed = af.Feed(
        fetch, blobs=counter.blobs, batch_size=4, concurrency=2, max_buffered_chunks=10, sink=spy
    )
    async with feed:
        await asyncio.wait_for(entered[2].wait(), 5)
        for _ in range(50):
            await asyncio.sleep(0)  # the loop is free, and fetchers get every chance to overrun
        stats = feed.stats()
        check_accounting(stats)
        assert stats.rows_handing >= 4  # the batch inside the blocked put, at least
        # the sink (4) + handed to the bridge (4 x 4) + prefetched (2 x 4) + a batch waiting
        # in the rebatch stage (4) + a partial one (3) + chunk queue (10) + a chunk per worker
        assert stats.rows_fetched <= 4 + 16 + 8 + 4 + 3 + 10 + 2
        assert q.dequeue(timeout=0) is not None  # reading lets the blocked put through
        await asyncio.wait_for(entered[3].wait(), 5)
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_in_flight == 0 and stats.rows_delivered >= 8


async def test_iterating_a_sink_feed_is_refused() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    feed = af.Feed(fetch, blobs=["x"], batch_size=2, sink=af.BlobsQueue(2, 1))
    message = r"^this feed hands its batches to the sink <BlobsQueue .*>; read them from the sink"
    with pytest.raises(af.FeedStateError, match=message):
        await anext(feed)
    async with feed:
        with pytest.raises(af.FeedStateError, match=message):
            await anext(feed)
        with pytest.raises(af.FeedStateError, match=message):
            feed.get(timeout=1)


def test_sync_iteration_of_a_sink_feed_is_refused() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    feed = af.Feed(fetch, blobs=["x"], batch_size=2, sink=af.BlobsQueue(2, 1))
    feed.start()
    try:
        with pytest.raises(af.FeedStateError, match="read them from the sink"):
            feed.get(timeout=1)
        with pytest.raises(af.FeedStateError, match="read them from the sink"):
            next(iter(feed))
    finally:
        feed.stop()


@pytest.mark.timeout(20)
def test_consumer_closing_the_sink_stops_the_feed_cleanly(counter: CounterSource) -> None:
    stopped_itself = threading.Event()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        if counter.issued < 80:
            return counter.chunk(4)
        try:
            await asyncio.Event().wait()  # nothing more: wait until the feed stops
        except asyncio.CancelledError:
            stopped_itself.set()
            raise
        raise AssertionError("unreachable")

    blocked = threading.Event()
    q = af.BlobsQueue(capacity=2, num_blobs=2)
    spy = SpySink(q, on_put=on_call(3, blocked))
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=1, sink=spy)
    feed.start()
    assert blocked.wait(5)  # the third put waits for room
    q.close()  # the consumer is done: the blocked put returns False
    assert stopped_itself.wait(5), "the feed did not stop on its own"
    feed.stop()  # no error: closing the sink is a clean way to stop
    assert not sink_threads()
    stats = feed.stats()
    check_accounting(stats)
    assert stats.state == "stopped" and stats.rows_in_flight == 0
    assert stats.rows_delivered == 8  # two batches were accepted before the close
    assert stats.dropped_by_cause["sink_closed"] >= 4  # the refused batch at least
    assert set(stats.dropped_by_cause) <= {"sink_closed", "stop"}


@pytest.mark.timeout(20)
def test_stop_while_the_bridge_is_blocked_in_put(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    blocked = threading.Event()
    q = af.BlobsQueue(capacity=1, num_blobs=2)
    spy = SpySink(q, on_put=on_call(2, blocked))
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, sink=spy)
    feed.start()
    assert blocked.wait(5)
    start = time.monotonic()
    feed.stop()
    assert time.monotonic() - start < STOP_BOUND_S
    assert q.closed and not sink_threads()
    assert len(drain(q)) == 1  # the record accepted before the stop
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_delivered == 4 and stats.rows_in_flight == 0
    assert set(stats.dropped_by_cause) == {"stop"}


@pytest.mark.timeout(20)
def test_stop_wakes_a_consumer_blocked_on_an_empty_sink() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    q = af.BlobsQueue(capacity=2, num_blobs=1)
    feed = af.Feed(fetch, blobs=["x"], batch_size=2, sink=q)
    feed.start()
    waiting = threading.Event()
    got: list[object] = []

    def consume() -> None:
        waiting.set()
        got.append(q.dequeue())  # no timeout: only the close can wake it

    consumer = threading.Thread(target=consume, name="consumer")
    consumer.start()
    assert waiting.wait(5)
    feed.stop()
    consumer.join(STOP_BOUND_S)
    assert got == [None]


def test_stopping_a_feed_never_started_closes_its_sink() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    q = af.BlobsQueue(capacity=2, num_blobs=1)
    af.Feed(fetch, blobs=["x"], batch_size=2, sink=q).stop()
    assert q.closed


@pytest.mark.timeout(20)
def test_a_failing_sink_stops_the_feed_with_sink_error(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    q = af.BlobsQueue(capacity=8, num_blobs=2)
    spy = SpySink(q, fail_on=3)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, sink=spy)
    feed.start()
    assert len(drain(q)) == 2  # the feed stopped on the error and closed its sink
    with pytest.raises(
        af.SinkError, match=r"^sink .* failed in put\(\): OSError: disk full$"
    ) as info:
        feed.stop()
    assert isinstance(info.value.__cause__, OSError)
    feed.stop()  # raised once
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_delivered == 8 and stats.dropped_by_cause["error"] >= 4


@pytest.mark.timeout(20)
def test_an_asyncfeed_error_from_the_sink_passes_as_it_is(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    q = af.BlobsQueue(capacity=2, num_blobs=3)  # the feed has 2 blobs
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, sink=q)
    feed.start()
    assert drain(q) == []
    with pytest.raises(af.RecordError, match="records of 3 blobs, got 2"):
        feed.stop()


@pytest.mark.timeout(20)
def test_a_finite_feed_closes_its_sink_after_the_last_batch() -> None:
    async def fetch_one(key: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return [np.arange(3 * key, 3 * key + 3)]

    q = af.BlobsQueue(capacity=2, num_blobs=1)
    feed = af.Feed.from_keys(range(10), fetch_one, blobs=["x"], batch_size=4, ordered=True, sink=q)
    feed.start()
    records = drain(q)
    feed.stop()
    assert [len(r[0]) for r in records] == [4] * 7 + [2]
    assert np.concatenate([r[0] for r in records]).tolist() == list(range(30))
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_delivered == 30 and stats.rows_dropped == 0


def test_a_sink_must_have_put_close_and_closed() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    with pytest.raises(
        af.ConfigError,
        match=r"^sink must have put\(batch\) -> bool, close\(\) and closed; got \[\]$",
    ):
        af.Feed(fetch, blobs=["x"], batch_size=2, sink=[])  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_a_script_that_forgets_to_stop_a_sink_feed_still_exits(tmp_path: Any) -> None:
    script = tmp_path / "forgets_sink.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import asyncfeed as af

            async def fetch(worker_id, batch_size):
                return [np.zeros(2)]

            q = af.BlobsQueue(capacity=1, num_blobs=1)
            feed = af.Feed(fetch, blobs=["x"], batch_size=2, sink=q)
            feed.start()
            print(len(q.dequeue(timeout=5)[0]))
            # no feed.stop(): the bridge thread is blocked in put() on the full queue
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(60)
def test_handoff_benchmark_reports_each_sink() -> None:
    from benchmarks.handoff import measure_handoff

    results = measure_handoff(batches=200, repeats=1)
    assert set(results) == {
        "blobs_queue_us_per_batch",
        "torch_cpu_us_per_batch",
        "direct_blobs_queue_us_per_batch",
    }
    assert all(0 < us < 10_000 for us in results.values())
