"""Errors surface where the consumer looks: async for, get(), stop(); max_errors skips."""

from __future__ import annotations

import asyncio
import itertools
import threading

import numpy as np
import pytest

import asyncfeed as af
from tests.conftest import CounterSource, check_accounting


class Boom(RuntimeError):
    pass


def failing_fetcher(counter: CounterSource, fail_at: set[int]):  # type: ignore[no-untyped-def]
    calls = itertools.count()
    lock = threading.Lock()

    def decide() -> int:
        with lock:
            return next(calls)

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        n = decide()
        await asyncio.sleep(0)
        if n in fail_at:
            raise Boom(f"call {n} failed")
        return counter.chunk(4)

    return fetch


async def test_fetch_error_stops_the_feed_and_reaches_async_for(counter: CounterSource) -> None:
    feed = af.Feed(failing_fetcher(counter, {10}), blobs=counter.blobs, batch_size=8)
    with pytest.raises(
        af.FetchError, match=r"^fetch failed in worker \d+: Boom: call 10 failed$"
    ) as info:
        async with feed:
            async for _ in feed:
                pass
    assert isinstance(info.value.__cause__, Boom)
    assert info.value.worker_id in feed.worker_ids and info.value.key is None
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_in_flight == 0 and stats.fetch_errors == 1
    assert set(stats.dropped_by_cause) <= {"error"}


async def test_error_not_seen_by_consumer_is_raised_by_aclose(counter: CounterSource) -> None:
    fail_now = asyncio.Event()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await fail_now.wait()
        raise Boom("late")

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1)
    await feed.__aenter__()
    fail_now.set()
    while feed.state is af.FeedState.RUNNING:
        await asyncio.sleep(0)
    with pytest.raises(af.FetchError, match="Boom: late"):
        await feed.aclose()
    await feed.aclose()  # seen once: a second close is quiet


async def test_error_already_seen_is_not_raised_again_by_aclose(counter: CounterSource) -> None:
    feed = af.Feed(failing_fetcher(counter, {0}), blobs=counter.blobs, batch_size=8)
    await feed.__aenter__()
    with pytest.raises(af.FetchError):
        await anext(feed)
    with pytest.raises(af.FetchError):  # the feed stays failed for later reads
        await anext(feed)
    await feed.aclose()


def test_fetch_error_reaches_sync_get_and_stop(counter: CounterSource) -> None:
    feed = af.Feed(failing_fetcher(counter, {5}), blobs=counter.blobs, batch_size=8)
    feed.start()
    with pytest.raises(af.FetchError, match="call 5 failed"):
        for _ in range(1000):
            feed.get(timeout=5)
    feed.stop()

    failed = threading.Event()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        failed.set()  # the raise below happens before the loop can process any stop
        raise Boom("unseen")

    other = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1)
    other.start()
    assert failed.wait(5)
    with pytest.raises(af.FetchError, match="Boom: unseen"):
        other.stop()  # the consumer never called get(): stop() reports the error
    other.stop()  # and only once


async def test_bad_chunk_raises_chunk_error_naming_blob_and_worker() -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((3, 2)), np.zeros(4)]

    feed = af.Feed(fetch, blobs=["data", "label"], batch_size=8, concurrency=1)
    with pytest.raises(
        af.ChunkError, match=r"^blob 'label' from worker \d+: first dimensions differ"
    ):
        async with feed:
            await anext(feed)


async def test_max_errors_skips_within_budget(counter: CounterSource) -> None:
    feed = af.Feed(
        failing_fetcher(counter, {3, 6, 9}), blobs=counter.blobs, batch_size=8, max_errors=3
    )
    async with feed:
        seen = 0
        async for batch in feed:
            seen += batch.rows
            if seen >= 400:
                break
    stats = feed.stats()
    assert stats.fetch_errors == 3
    check_accounting(stats)


async def test_max_errors_budget_exceeded_stops_with_fetch_error(counter: CounterSource) -> None:
    feed = af.Feed(
        failing_fetcher(counter, {1, 2, 3}),
        blobs=counter.blobs,
        batch_size=8,
        concurrency=1,
        max_errors=2,
    )
    with pytest.raises(
        af.FetchError, match=r"^3 failed fetches exceed max_errors=2; last in worker \d+: Boom"
    ):
        async with feed:
            async for _ in feed:
                pass


async def test_max_errors_zero_stops_at_first_error(counter: CounterSource) -> None:
    feed = af.Feed(
        failing_fetcher(counter, {0}),
        blobs=counter.blobs,
        batch_size=8,
        concurrency=1,
        max_errors=0,
    )
    with pytest.raises(af.FetchError, match="exceed max_errors=0"):
        async with feed:
            await anext(feed)


async def test_bad_chunks_count_against_the_budget() -> None:
    calls = itertools.count()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        n = next(calls)
        return [np.zeros(2)] if n % 2 else [np.zeros((2, 3))]  # trailing shape flips

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, concurrency=1, max_errors=100)
    async with feed:
        for _ in range(10):
            await anext(feed)
    assert feed.stats().fetch_errors >= 10


async def test_init_fun_failure_is_a_fetch_error() -> None:
    def init(feed: af.Feed) -> None:
        raise Boom("no credentials")

    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, init_fun=init)
    with pytest.raises(af.FetchError, match=r"^init_fun .* failed: Boom: no credentials$"):
        async with feed:
            await anext(feed)


async def test_consumer_exception_wins_over_feed_error(counter: CounterSource) -> None:
    feed = af.Feed(failing_fetcher(counter, {2}), blobs=counter.blobs, batch_size=4)
    with pytest.raises(KeyError):
        async with feed:
            await anext(feed)
            raise KeyError("consumer bug")


def test_fetch_error_pickles() -> None:
    import pickle

    err = af.FetchError("x failed", worker_id=3, key="k")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.worker_id, back.key) == ("x failed", 3, "k")


async def test_a_thousand_failing_keys_log_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fetch_one(key: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        if key % 2:
            raise ConnectionError(f"host down for key {key}")
        raise TimeoutError(f"timed out on key {key}")

    feed = af.Feed.from_keys(range(1000), fetch_one, blobs=["x"], batch_size=4, max_errors=5000)
    with caplog.at_level("WARNING", logger="asyncfeed"):
        async with feed:
            async for _ in feed:
                pass
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("asyncfeed")]
    assert feed.stats().fetch_errors == 1000
    assert len(lines) <= 5 + 3, lines  # the first 5, then summaries (one per 10 s, and at the end)
    assert "further ones are summarised" in lines[4]
    summary = lines[-1]
    assert (
        summary.startswith("skipped 995 more failed fetches (") and "of max_errors=5000" in summary
    )
    assert "ConnectionError" in summary and "TimeoutError" in summary
