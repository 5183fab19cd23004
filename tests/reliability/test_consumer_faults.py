"""Consumers that misbehave: stall, break out early, get cancelled, time out, or raise."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.bridge import to_thread
from tests.reliability.faults import (
    CounterSource,
    FaultyFetcher,
    Tracker,
    assert_clean_end,
    consume,
    consume_sync,
    join_threads,
    timed,
)

pytestmark = pytest.mark.timeout(20)


async def settle(flavour: str) -> None:
    if flavour == "sync":
        await to_thread(join_threads, "asyncfeed-train-fetch", name="test-join")


async def test_a_stalled_consumer_holds_the_feed_within_its_buffers_and_resumes(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    feed = af.Feed(
        faulty.fetch(flavour),
        blobs=counter.blobs,
        batch_size=8,
        concurrency=3,
        max_buffered_chunks=20,
    )
    bound = 20 * 9 + 3 * 9 + 8 + 2 * 8 + 8  # see test_fetcher_faults' buffer bound
    tracker = Tracker(8)
    async with feed:
        for _ in range(5):
            await consume(feed, tracker, tracker.rows + 100)
            await asyncio.sleep(0.05)  # the consumer stalls (system under test)
            # The fetchers fill the queue meanwhile. How far they got in 50 ms depends on the
            # machine (sync ones run on threads): wait for the full queue itself, not a time.
            while feed.stats().chunk_queue_depth < 20:
                await asyncio.sleep(0)
            stats = feed.stats()
            assert stats.chunk_queue_depth == 20  # fetchers filled the queue and wait
            assert stats.rows_in_flight <= bound
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


async def test_break_out_of_async_for_then_iterate_again(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=2)
    tracker = Tracker(8)
    async with feed:
        for round_ in range(1, 6):
            async for batch in feed:
                tracker.add(batch)
                break  # leaves the iterator mid-stream; nothing is lost
            assert tracker.batches == round_
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


@pytest.mark.parametrize("where", ["waiting", "holding", "before-iterating"])
async def test_cancelling_the_orchestrator_task_stops_the_feed(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str, where: str
) -> None:
    if where == "waiting":
        faulty.at = {0: "ok"}
        faulty.rates = {"hang": 1.0}
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=4, concurrency=2)
    tracker = Tracker(4)
    reached = asyncio.Event()

    async def orchestrator() -> None:
        async with feed:
            if where == "before-iterating":
                reached.set()
                await asyncio.get_running_loop().create_future()
            async for batch in feed:
                tracker.add(batch)
                if where == "holding":
                    reached.set()
                    await asyncio.get_running_loop().create_future()
                elif tracker.rows >= 4 and faulty.hanging.is_set():
                    reached.set()

    task = asyncio.create_task(orchestrator())
    await reached.wait()
    with timed():
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    faulty.release()
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


async def test_a_second_cancel_while_leaving_async_with_still_stops_the_feed() -> None:
    cleaning = asyncio.Event()
    release = asyncio.Event()

    async def fetch(worker_id: int, batch_size: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()  # async clean-up on cancel (closing a session, say)
            raise

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, concurrency=1)

    async def orchestrator() -> None:
        async with feed:
            await anext(feed)

    task = asyncio.create_task(orchestrator())
    await asyncio.sleep(0)
    task.cancel()
    await cleaning.wait()  # the feed is stopping: __aexit__ waits for the runner
    task.cancel()  # e.g. a TaskGroup or a timeout cancelling once more
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert feed.state is af.FeedState.STOPPED  # the close completed before the cancel went on
    assert_clean_end(feed)


async def test_asyncio_timeout_around_the_consumer(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"slow": 1.0}
    faulty.slow_s = 0.02
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=64, concurrency=2)
    tracker = Tracker(64)
    with timed(0.3 + 2.0), pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3), feed:
            await consume(feed, tracker, 10**9)
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


class ConsumerBug(Exception):
    pass


@pytest.mark.parametrize("feed_fails", [False, True])
async def test_a_consumer_that_raises_gets_its_own_exception_back(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str, feed_fails: bool
) -> None:
    if feed_fails:
        faulty.at = {4: "raise"}
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=4, concurrency=1)
    tracker = Tracker(4)
    with pytest.raises(ConsumerBug):
        async with feed:
            tracker.add(await anext(feed))
            if feed_fails:
                while feed.state is af.FeedState.RUNNING:
                    await asyncio.sleep(0)  # let the feed fail before the consumer does
            raise ConsumerBug
    await settle(flavour)
    causes = {"stop", "error", "abandoned"}
    assert_clean_end(feed, tracker, causes=causes, issued=counter.issued)


def test_a_sync_consumer_thread_that_dies_leaves_the_feed_stoppable(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=2)
    tracker = Tracker(8)
    feed.start()
    died = threading.Event()

    def consumer() -> None:
        try:
            consume_sync(feed, tracker, 200)
            raise ConsumerBug("consumer thread dies holding nothing")
        except ConsumerBug:
            died.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    thread.join(10)
    assert died.is_set()
    with timed():
        feed.stop()
    join_threads("asyncfeed-train-fetch")
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


def test_get_timeouts_while_stalled_lose_nothing(counter: CounterSource) -> None:
    gate = threading.Semaphore(0)

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        gate.acquire()
        return counter.chunk(3)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=6, concurrency=2)
    tracker = Tracker(6)
    feed.start()
    for _ in range(20):
        with pytest.raises(af.FeedTimeoutError):
            feed.get(timeout=0.01)  # nothing ready: the getter gives up, nothing is lost
        gate.release()
        gate.release()
        tracker.add(feed.get(timeout=5))
    with timed():
        feed.stop()  # both fetch threads are blocked in the gate: abandoned
    gate.release()
    gate.release()
    join_threads("asyncfeed-train-fetch")
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)
    assert tracker.rows == 120
