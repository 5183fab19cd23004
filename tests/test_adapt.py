"""``concurrency=Adaptive(...)``: the feed chooses its fetch concurrency (``adapt.py``).

Fetch latency and the consumer's step are simulated with ``asyncio.sleep`` (they are the
workload here, not synchronisation). Each test asserts a direction and a bound, never a speed.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.adaptive.demand import REASONS
from tests import procs_fetchers as pf

pytestmark = pytest.mark.timeout(60)


def test_adaptive_concurrency_is_an_option_and_stats_show_its_start() -> None:
    adaptive = af.Adaptive(min=2, max=32, start=5)
    feed = af.Feed.from_keys(range(10), lambda k: [np.array([k])], blobs=["k"], batch_size=5,
                             concurrency=adaptive)  # fmt: skip
    assert feed.concurrency == adaptive and feed.options.max_concurrency == 32
    with feed:
        first = feed.stats()
        assert (first.concurrency_limit, first.concurrency_reason) == (5, "start")
        assert sum(b.rows for b in feed) == 10
    fixed = af.Feed.from_keys(range(3), lambda k: None, blobs=["k"], batch_size=1, concurrency=7)
    with fixed:
        assert (fixed.stats().concurrency_limit, fixed.stats().concurrency_reason) == (7, "fixed")
    with pytest.raises(af.ConfigError, match=r"^concurrency must be an int"):
        af.Feed.from_keys([1], lambda k: None, blobs=["k"], batch_size=1, concurrency="many")  # type: ignore[arg-type]


async def slow_key(key: int) -> list[np.ndarray]:
    await asyncio.sleep(0.02)  # a 20 ms service
    return [np.array([key])]


@pytest.mark.slow
async def test_a_fast_service_grows_the_limit_until_the_consumer_no_longer_waits() -> None:
    """16-row steps of 5 ms want 3,200 rows/s; at 20 ms a key that is 64 keys in flight."""
    feed = af.Feed.from_keys(
        itertools.count(), slow_key, blobs=["k"], batch_size=16, log_interval=None,
        concurrency=af.Adaptive(min=1, max=512, start=2), max_buffered_chunks=2048,
    )  # fmt: skip
    async with feed:
        start = time.monotonic()
        mark: af.FeedStats | None = None
        async for _ in feed:
            await asyncio.sleep(0.005)  # the training step
            elapsed = time.monotonic() - start
            if mark is None and elapsed > 5.0:
                mark = feed.stats()
            if elapsed > 7.0:
                break
        end = feed.stats()
    assert mark is not None
    assert end.concurrency_limit >= 48 and mark.concurrency_limit >= 48  # from 2
    waited = end.consumer_wait_s - mark.consumer_wait_s
    assert waited < 0.25 * 2.0  # the consumer waits for a small share of the last 2 s


@pytest.mark.slow
async def test_a_slow_consumer_shrinks_the_limit_instead_of_loading_the_service() -> None:
    """A step of 50 ms per 16 rows takes 320 rows/s: at 5 ms a key, about 2 in flight."""

    async def fast_key(key: int) -> list[np.ndarray]:
        await asyncio.sleep(0.005)
        return [np.array([key])]

    feed = af.Feed.from_keys(
        itertools.count(), fast_key, blobs=["k"], batch_size=16, log_interval=None,
        concurrency=af.Adaptive(min=1, max=256, start=64), max_buffered_chunks=64,
    )  # fmt: skip
    async with feed:
        start = time.monotonic()
        async for _ in feed:
            await asyncio.sleep(0.05)
            if time.monotonic() - start > 5.0:
                break
        stats = feed.stats()
    assert stats.concurrency_limit <= 16, stats.concurrency_limit  # from 64
    assert stats.concurrency_reason in ("backpressure", "demand")
    assert stats.backpressure_s_by_stage["chunk_queue"] > 0


@pytest.mark.slow
async def test_a_slow_key_source_does_not_grow_the_limit() -> None:
    """The consumer waits for keys (cause ``source``), not for fetch slots: no growth."""

    async def keys() -> Any:
        for key in range(250):
            await asyncio.sleep(0.01)  # keys come at 100 a second
            yield key

    async def instant(key: int) -> list[np.ndarray]:
        return [np.array([key])]

    feed = af.Feed.from_keys(
        keys(), instant, blobs=["k"], batch_size=5, log_interval=None,
        concurrency=af.Adaptive(min=1, max=512, start=8),
    )  # fmt: skip
    limits = []
    async with feed:
        async for _ in feed:
            stats = feed.stats()
            limits.append((stats.concurrency_limit, stats.concurrency_reason))
    assert feed.stats().consumer_wait_by_cause.get("source", 0.0) > 1.0
    assert max(limit for limit, _ in limits) <= 8, limits
    assert "starved" not in {reason for _, reason in limits}


async def test_sync_fetchers_on_the_feeds_threads_pass_the_gate() -> None:
    """No pump runs ahead of the limit: with the consumer away the limit can only fall, so
    no more than its start of 2 calls ever run, on a pool of up to 64 threads."""
    lock = threading.Lock()
    running = peak = calls = 0
    filled = asyncio.Event()
    loop = asyncio.get_running_loop()

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        nonlocal running, peak, calls
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1
            calls += 1
            if calls == 40:
                loop.call_soon_threadsafe(filled.set)
        return [np.zeros((1, 2), np.float32)]

    feed = af.Feed(
        fetch, blobs=["x"], batch_size=8, log_interval=None, max_buffered_chunks=32,
        concurrency=af.Adaptive(min=2, max=64, start=2),
    )  # fmt: skip
    async with feed:
        await asyncio.wait_for(filled.wait(), 20)
    assert peak == 2


@pytest.mark.slow
async def test_worker_processes_with_an_adaptive_limit() -> None:
    fetcher = af.HttpFetcher()
    adaptive = af.Adaptive(max=8)
    af.Feed.from_keys(["http://127.0.0.1:1/x"], fetcher, blobs=["data"], batch_size=1,
                      concurrency=adaptive, processes=2)  # fmt: skip
    async with fetcher:  # as a worker process opens it: without the feed
        assert fetcher.adaptive == adaptive  # it was told before it went to the workers
    feed = af.Feed.from_keys(
        range(300), pf.async_key_rows, blobs=["ids", "x"], batch_size=10, log_interval=None,
        concurrency=af.Adaptive(min=2, max=16, start=2), workers=af.Processes(2),
    )  # fmt: skip
    ids: list[Any] = []
    async with feed:
        async for batch in feed:
            ids.extend(batch["ids"].tolist())
        stats = feed.stats()
    assert sorted(ids) == pf.expected_key_ids(k for k in range(300) if k % 7 != 6)
    assert 2 <= stats.concurrency_limit <= 16 and stats.concurrency_reason in REASONS
