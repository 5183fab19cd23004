"""stop() from awkward states: inside init_fun, during a keyed source's final flush, and
with a fetcher that resists cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.bridge import to_thread
from tests.reliability.faults import (
    CounterSource,
    Tracker,
    assert_clean_end,
    join_threads,
    timed,
)

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("api", ["async", "sync"])
@pytest.mark.parametrize("init_kind", ["async", "sync"])
async def test_stop_while_init_fun_blocks(counter: CounterSource, api: str, init_kind: str) -> None:
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    async def async_init(feed: af.Feed) -> None:
        entered.set()
        await asyncio.get_running_loop().create_future()  # never resolves: cancelled

    def sync_init(feed: af.Feed) -> None:
        entered.set()
        release.wait(10)  # cannot be interrupted: abandoned

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        calls.append(worker_id)
        return counter.chunk(2)

    init = async_init if init_kind == "async" else sync_init
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, init_fun=init)
    try:
        if api == "async":
            await feed.__aenter__()
            assert await to_thread(entered.wait, 5, name="test-wait")
            with timed():
                await feed.aclose()
        else:
            await to_thread(feed.start, name="test-start")
            assert await to_thread(entered.wait, 5, name="test-wait")
            with timed():
                await to_thread(feed.stop, name="test-stop")
    finally:
        release.set()
    await to_thread(join_threads, "asyncfeed-train-init", name="test-join")
    assert calls == []  # no fetcher ever started
    assert_clean_end(feed, causes=set())


async def test_init_fun_failing_while_stop_is_requested_is_reported_once(
    counter: CounterSource,
) -> None:
    entered = threading.Event()
    fail = threading.Event()

    def init(feed: af.Feed) -> None:
        entered.set()
        fail.wait(10)
        raise OSError("no credentials")

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(2)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, init_fun=init)
    await feed.__aenter__()
    assert await to_thread(entered.wait, 5, name="test-wait")
    fail.set()  # fails just as the stop arrives: either outcome is fine, but never a hang
    raised: list[BaseException] = []
    with timed():
        try:
            await feed.aclose()
        except af.FetchError as exc:
            raised.append(exc)
    await feed.aclose()  # quiet: the error, if any, was reported once
    assert all(isinstance(e.__cause__, OSError) for e in raised)
    await to_thread(join_threads, "asyncfeed-train-init", name="test-join")
    assert_clean_end(feed, causes=set())


def chunk_for(key: int) -> list[np.ndarray]:
    return [np.array([key], np.int64), np.full((1, 4), key, np.float32)]


@pytest.mark.parametrize("drop_last", [False, True])
async def test_stop_during_the_final_flush_of_a_keyed_source(drop_last: bool) -> None:
    async def fetch_one(key: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return chunk_for(key)

    feed = af.Feed.from_keys(
        range(25),
        fetch_one,
        blobs=["ids", "x"],
        batch_size=10,
        prefetch_batches=1,
        drop_last=drop_last,
        ordered=True,
    )
    tracker = Tracker(10)
    await feed.__aenter__()
    tracker.add(await anext(feed))
    # batch 2 waits in the batch channel; the flushed 5 rows wait behind it (or are dropped)
    want_rebatching = 0 if drop_last else 5
    while not (
        feed.stats().rows_batched == 10
        and feed.stats().rows_rebatching == want_rebatching
        and feed.stats().rows_queued == 0
        and feed.stats().rows_fetched == 25
    ):
        await asyncio.sleep(0)
    with timed():
        await feed.aclose()
    stats = assert_clean_end(feed, tracker, causes={"stop", "drop_last"})
    assert stats.rows_fetched == 25 and stats.rows_delivered == 10
    expected = {"stop": 10, "drop_last": 5} if drop_last else {"stop": 15}
    assert stats.dropped_by_cause == expected


async def test_a_keyed_source_ends_and_delivers_its_flushed_batch_after_a_stall() -> None:
    feed = af.Feed.from_keys(
        range(25), chunk_for, blobs=["ids", "x"], batch_size=10, prefetch_batches=1, ordered=True
    )
    tracker = Tracker(10)
    async with feed:
        async for batch in feed:
            tracker.add(batch)
            for _ in range(20):
                await asyncio.sleep(0)  # the stage runs ahead and flushes meanwhile
    assert tracker.partial and tracker.rows == 25
    assert_clean_end(feed, tracker, causes=set(), issued=25)


async def test_a_fetcher_that_swallows_one_cancel_still_lets_the_feed_stop(
    counter: CounterSource,
) -> None:
    swallowed = asyncio.Event()

    async def sloppy(worker_id: int, batch_size: int) -> list[np.ndarray]:
        try:
            await asyncio.get_running_loop().create_future()
        except BaseException:  # a bare-except retry loop: swallows the cancel, returns
            swallowed.set()
        return counter.chunk(3)

    feed = af.Feed(sloppy, blobs=counter.blobs, batch_size=4, concurrency=2)
    await feed.__aenter__()
    await asyncio.sleep(0)
    with timed():
        await feed.aclose()
    assert swallowed.is_set()
    assert_clean_end(feed, causes={"stop"}, issued=counter.issued)


async def test_a_fetcher_that_resists_cancellation_makes_stop_time_out_not_hang(
    counter: CounterSource,
) -> None:
    release = asyncio.Event()
    resisted = asyncio.Event()

    async def stubborn(worker_id: int, batch_size: int) -> list[np.ndarray]:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                resisted.set()  # swallows every cancel until released
        return counter.chunk(3)

    feed = af.Feed(stubborn, blobs=counter.blobs, batch_size=4, concurrency=1)
    await feed.__aenter__()
    await asyncio.sleep(0)
    with timed(0.5 + 1.0), pytest.raises(af.FeedTimeoutError, match=r"did not stop within 0\.5 s"):
        await feed.aclose(timeout=0.5)
    assert resisted.is_set() and feed.state is af.FeedState.STOPPING
    release.set()
    with timed():
        await feed.aclose()  # once the fetcher lets go, a second close completes
    assert_clean_end(feed, causes={"stop"}, issued=counter.issued)


@pytest.mark.parametrize("how", ["stop", "fail"])
async def test_one_feed_of_a_shared_source_ending_leaves_the_other_whole(
    counter: CounterSource, how: str
) -> None:
    fail = asyncio.Event()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        if fail.is_set() and worker_id in one.worker_ids:
            raise OSError("one's fetcher breaks")
        return counter.chunk(3)

    one = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, source="shared")
    two = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, source="shared")
    tracker = Tracker(8)
    async with two:
        await one.__aenter__()
        for _ in range(20):
            tracker.add(await anext(one))
            tracker.add(await anext(two))
        if how == "fail":
            fail.set()
            with pytest.raises(af.FetchError, match="one's fetcher breaks"):
                while True:
                    tracker.add(await anext(one))
        with timed():
            await one.aclose()
        for _ in range(50):  # the survivor goes on with the shared queue
            tracker.add(await anext(two))
    stats = assert_clean_end(two, causes={"stop", "error"}, issued=counter.issued)
    assert stats.rows_delivered == tracker.rows  # one ledger for the source, each row once
    assert one.stats().batches_delivered + stats.batches_delivered == tracker.batches


async def test_stop_while_an_async_key_source_hangs() -> None:
    async def keys() -> AsyncIterator[int]:
        for k in range(5):
            yield k
        await asyncio.get_running_loop().create_future()  # the listing never ends

    feed = af.Feed.from_keys(keys(), chunk_for, blobs=["ids", "x"], batch_size=2, ordered=True)
    tracker = Tracker(2)
    await feed.__aenter__()
    for _ in range(2):
        tracker.add(await anext(feed))
    waiting = asyncio.create_task(anext(feed))  # row 4 waits in the rebatcher for a 6th key
    while feed.stats().rows_fetched < 5:  # let the fifth fetch land (deterministic yields)
        await asyncio.sleep(0)
    with timed():
        await feed.aclose()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert_clean_end(feed, tracker, causes={"stop"}, issued=5)
