"""Fetchers that misbehave: raise, return None or bad chunks, hang, crawl, or race ahead.

Every test runs the fetcher both ways (``async def`` on the loop, a plain function in the
feed's daemon thread pool) and ends with the invariants of ``faults.assert_clean_end``.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.bridge import to_thread
from tests.reliability.faults import (
    CounterSource,
    FaultyFetcher,
    Injected,
    Tracker,
    assert_clean_end,
    bad_chunks,
    consume,
    join_threads,
    timed,
)

pytestmark = pytest.mark.timeout(20)

FETCH_THREADS = "asyncfeed-train-fetch"


async def settle(flavour: str) -> None:
    """Let abandoned sync calls finish, so their late rows are in the ledger."""
    if flavour == "sync":
        await to_thread(join_threads, FETCH_THREADS, name="test-join")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_raise_at_a_random_call_stops_the_feed_with_the_worker_named(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str, seed: int
) -> None:
    bad_call = random.Random(seed).randrange(5, 60)
    faulty.at = {bad_call: "raise"}
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=3)
    tracker = Tracker(8)
    with pytest.raises(af.FetchError) as info:
        async with feed:
            await consume(feed, tracker, 10**9)
    err = info.value
    assert str(err) == (
        f"fetch failed in worker {err.worker_id}: Injected: injected failure at call {bad_call}"
    )
    assert isinstance(err.__cause__, Injected) and err.worker_id in feed.worker_ids
    await settle(flavour)
    stats = assert_clean_end(feed, tracker, causes={"error", "abandoned"}, issued=counter.issued)
    assert stats.fetch_errors == 1


async def test_raises_within_the_budget_are_skipped_and_counted(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"raise": 0.05}
    feed = af.Feed(
        faulty.fetch(flavour), blobs=counter.blobs, batch_size=16, concurrency=4, max_errors=10**6
    )
    tracker = Tracker(16)
    async with feed:
        await consume(feed, tracker, 3000)
    await settle(flavour)
    stats = assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)
    assert tracker.rows >= 3000
    # a call cancelled at stop may have drawn a fault it never raised
    assert faulty.injected["raise"] - 4 <= stats.fetch_errors <= faulty.injected["raise"]
    assert stats.fetch_errors > 0


async def test_raises_past_the_budget_stop_the_feed(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"raise": 0.3}
    feed = af.Feed(
        faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=2, max_errors=5
    )
    tracker = Tracker(8)
    with pytest.raises(af.FetchError, match=r"^6 failed fetches exceed max_errors=5; last in "):
        async with feed:
            await consume(feed, tracker, 10**9)
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"error", "abandoned"}, issued=counter.issued)


async def test_none_returns_are_counted_and_lose_nothing(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"none": 0.5}
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=2)
    tracker = Tracker(8)
    async with feed:
        await consume(feed, tracker, 800)
    await settle(flavour)
    stats = assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)
    assert stats.fetch_errors == 0
    assert faulty.injected["none"] - 2 <= stats.fetch_none <= faulty.injected["none"]


@pytest.mark.parametrize("kind", range(len(bad_chunks(CounterSource()))))
async def test_a_bad_chunk_stops_the_feed_with_a_chunk_error_naming_the_worker(
    counter: CounterSource, flavour: str, kind: int
) -> None:
    bad = bad_chunks(counter)
    faulty = FaultyFetcher(counter, at={5: "bad"})
    faulty._bad = [bad[kind]]  # this kind only
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=4, concurrency=1)
    tracker = Tracker(4)
    with pytest.raises(af.ChunkError, match=r"from worker \d+") as info:
        async with feed:
            await consume(feed, tracker, 10**9)
    assert f"worker {feed.worker_ids[0]}" in str(info.value)
    await settle(flavour)
    # a sync fetcher's thread may be in its next call already: that call is abandoned
    causes = {"error"} if flavour == "async" else {"error", "abandoned"}
    assert_clean_end(feed, tracker, causes=causes, issued=counter.issued)


async def test_bad_chunks_within_the_budget_never_corrupt_later_batches(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"bad": 0.2}
    faulty.at = {0: "ok"}
    feed = af.Feed(
        faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=3, max_errors=10**6
    )
    tracker = Tracker(8)
    async with feed:
        await consume(feed, tracker, 2000)
    await settle(flavour)
    stats = assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)
    assert faulty.injected["bad"] - 3 <= stats.fetch_errors <= faulty.injected["bad"]


async def test_a_fetcher_that_hangs_forever_is_cancelled_or_abandoned_at_stop(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.at = {3: "hang"}
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=2)
    tracker = Tracker(8)
    await feed.__aenter__()
    await consume(feed, tracker, 400)  # the other worker keeps the feed going
    assert faulty.hanging.is_set()
    with timed():
        await feed.aclose()
    if flavour == "sync":
        await to_thread(join_threads, FETCH_THREADS, 5.0, faulty.hung_threads, name="join")
        before = feed.stats().dropped_by_cause.get("abandoned", 0)
        faulty.release()  # the stuck call returns late: dropped and counted, never delivered
        await settle(flavour)
        assert feed.stats().dropped_by_cause["abandoned"] > before
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


async def test_stop_while_every_fetcher_hangs_and_the_consumer_waits(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"hang": 1.0}
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=4)
    await feed.__aenter__()
    waiting = asyncio.create_task(anext(feed))
    assert await to_thread(faulty.hanging.wait, 5, name="test-wait")
    with timed():
        await feed.aclose()
        with pytest.raises(StopAsyncIteration):
            await waiting
    faulty.release()
    await settle(flavour)
    assert_clean_end(feed, causes={"abandoned"}, issued=counter.issued)


async def test_very_slow_fetchers_stop_promptly_mid_call(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rates = {"slow": 1.0}
    faulty.slow_s = 0.3
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=4, concurrency=4)
    tracker = Tracker(4)
    async with feed:
        await consume(feed, tracker, 4)
        start = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - start < 0.3  # did not wait for the calls
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


async def test_fast_fetchers_and_a_slow_consumer_stay_within_the_buffers(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    faulty.rows = (1, 20)
    chunks, prefetch, workers, bs = 30, 2, 4, 16
    feed = af.Feed(
        faulty.fetch(flavour),
        blobs=counter.blobs,
        batch_size=bs,
        concurrency=workers,
        max_buffered_chunks=chunks,
        prefetch_batches=prefetch,
    )
    # queue + one chunk per worker + the rebatcher's carry + prefetched + an outbox batch
    bound = chunks * 20 + workers * 20 + bs + prefetch * bs + bs
    tracker = Tracker(bs)
    peak = 0
    async with feed:
        async for batch in feed:
            tracker.add(batch)
            await asyncio.sleep(0.002)  # the slow consumer (system under test)
            stats = feed.stats()
            peak = max(peak, stats.rows_in_flight)
            assert stats.rows_in_flight <= bound
            assert stats.chunk_queue_depth <= chunks
            if tracker.batches == 150:
                break
    assert peak > chunks  # the buffers did fill up: the bound was exercised
    await settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


@pytest.mark.parametrize("late", ["bad", "ok"])
async def test_the_late_result_of_an_abandoned_call_counts_only_if_it_is_a_chunk(
    faulty: FaultyFetcher, counter: CounterSource, late: str
) -> None:
    # call 0 fixes the schema; call 1 hangs and its late result is malformed or good
    faulty.at = {0: "ok"}
    faulty.rates = {"hang": 1.0}
    faulty.late = late
    feed = af.Feed(faulty.sync_fetch, blobs=counter.blobs, batch_size=10**6, concurrency=1)
    async with feed:
        assert await to_thread(faulty.hanging.wait, 5, name="test-wait")
    before = feed.stats()
    faulty.release()
    await settle("sync")
    stats = assert_clean_end(feed, causes={"stop", "abandoned"}, issued=counter.issued)
    late_rows = stats.dropped_by_cause.get("abandoned", 0)
    assert late_rows == (0 if late == "bad" else stats.rows_fetched - before.rows_fetched)


async def test_rows_held_by_parked_workers_are_dropped_as_error_when_the_feed_fails(
    counter: CounterSource,
) -> None:
    fail = asyncio.Event()
    first: list[int] = []

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        first.append(worker_id) if not first else None
        if worker_id == first[0]:
            await fail.wait()
            raise Injected("late failure")
        return counter.chunk(2)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=4, max_buffered_chunks=2)
    await feed.__aenter__()
    while feed.stats().rows_queued < 2 * 2 + 2 * 2:  # queue full, two workers parked on it
        await asyncio.sleep(0)
    fail.set()
    while feed.state is af.FeedState.RUNNING:
        await asyncio.sleep(0)  # the feed fails on its own, no stop requested
    with pytest.raises(af.FetchError, match="late failure"):
        await feed.aclose()
    stats = assert_clean_end(feed, causes={"error"}, issued=counter.issued)
    assert stats.dropped_by_cause == {"error": stats.rows_fetched}
