"""Why the consumer waits (``attribution.py``): the rule, and real feeds held up at each stage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.attribution import Blocked, Waits, wait_cause
from asyncfeed.bridge import to_thread
from tests import procs_fetchers as pf
from tests.conftest import CounterSource

pytestmark = pytest.mark.timeout(60)

BASE: dict[str, Any] = {
    "sink_behind": False,
    "ready_rows": 0,
    "batch_size": 8,
    "remote": False,
    "inflight": 4,
    "limit": 4,
    "idle": 0,
    "keys_starved": False,
    "throttled": 0,
    "decode_queued": 0,
}


@pytest.mark.parametrize(
    ("changes", "cause"),
    [
        ({}, "fetch_limit"),
        ({"sink_behind": True, "ready_rows": 99, "throttled": 3}, "sink"),
        ({"ready_rows": 8}, "rebatch"),
        ({"ready_rows": 7, "throttled": 2, "decode_queued": 5}, "throttled"),
        ({"decode_queued": 5}, "decode"),
        ({"inflight": 64, "limit": 64, "throttled": 2, "decode_queued": 3}, "fetch_limit"),
        ({"inflight": 64, "limit": 64, "throttled": 16}, "throttled"),
        ({"keys_starved": True}, "source"),
        ({"idle": 4, "inflight": 0}, "source"),
        ({"remote": True}, "workers"),
        ({"inflight": 2}, "source"),  # slots free and nothing in them: nothing to fetch
    ],
)
def test_the_first_empty_stage_from_the_consumer_up(changes: dict[str, Any], cause: str) -> None:
    assert wait_cause(**{**BASE, **changes}) == cause


def test_the_clocks() -> None:
    waits = Waits()
    assert waits.snapshot() == (0.0, {}, 0, 0.0)
    waits.asked()
    waits.add("source", 0.5)
    waits.add("source", 0.25)
    total, by_cause, count, share = waits.snapshot()
    assert total == 0.75 and by_cause == {"source": 0.75} and count == 2 and 0 < share <= 1
    blocked = Blocked()
    blocked.enter()
    blocked.enter()
    blocked.leave()
    assert blocked.seconds > 0
    blocked.leave()
    done = blocked.seconds
    assert blocked.seconds == done  # not blocked any more: the clock stands


def main_cause(by_cause: Mapping[str, float]) -> str:
    return max(by_cause, key=by_cause.__getitem__)


async def test_a_slow_fetch_at_full_concurrency_is_fetch_limit(counter: CounterSource) -> None:
    async def fetch_one(key: int) -> list[np.ndarray]:
        await asyncio.sleep(0.02)
        ids, x = counter.chunk(1)
        return [ids, x]

    feed = af.Feed.from_keys(
        range(200), fetch_one, blobs=counter.blobs, batch_size=8, concurrency=4
    )
    async with feed:
        async for _ in feed:
            pass
    stats = feed.stats()
    assert stats.consumer_waits > 0 and main_cause(stats.consumer_wait_by_cause) == "fetch_limit"
    assert stats.starvation > 0.5  # the consumer does nothing: it mostly waits
    assert stats.time_to_first_batch_s is not None and stats.time_to_first_batch_s > 0


async def test_a_slow_key_source_is_source(counter: CounterSource) -> None:
    async def keys() -> AsyncIterator[int]:
        for k in range(40):
            await asyncio.sleep(0.01)  # the listing is the slow part
            yield k

    async def fetch_one(key: int) -> list[np.ndarray]:
        return counter.chunk(1)

    feed = af.Feed.from_keys(keys(), fetch_one, blobs=counter.blobs, batch_size=4, concurrency=4)
    async with feed:
        async for _ in feed:
            pass
    assert main_cause(feed.stats().consumer_wait_by_cause) == "source"


async def test_a_slow_consumer_does_not_starve_and_the_feed_is_held_back(
    counter: CounterSource,
) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(4)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, max_buffered_chunks=4)
    async with feed:
        async for i, _ in _enumerate(feed):
            await asyncio.sleep(0.01)  # a training step slower than the feed
            if i == 40:
                break
        stats = feed.stats()
    assert stats.starvation < 0.2, stats.consumer_wait_by_cause
    assert stats.backpressure_s_by_stage["batch_queue"] > 0.2
    assert stats.backpressure_s_by_stage["chunk_queue"] > 0.2
    assert stats.queues["chunks"][1] == 4 and stats.queues["batches"][1] == 2


async def _enumerate(feed: af.Feed) -> AsyncIterator[tuple[int, af.Batch]]:
    i = 0
    async for batch in feed:
        yield i, batch
        i += 1


def test_a_slow_sink_reader_is_backpressure_on_the_sink(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(8)

    sink = af.BlobsQueue(capacity=2, num_blobs=2)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, sink=sink)
    with feed:
        for _ in range(30):
            assert sink.dequeue(timeout=10) is not None
            time.sleep(0.01)  # the reader's own work, slower than the feed
        stats = feed.stats()
    assert stats.starvation < 0.2
    assert stats.backpressure_s_by_stage["sink"] > 0.1
    assert stats.queues["sink"][1] == 2


class SlowPut:
    """A sink whose put (the device copy) is slow while its reader waits."""

    def __init__(self) -> None:
        self.inner = af.BlobsQueue(capacity=2, num_blobs=2)

    def put(self, batch: Mapping[str, np.ndarray], /) -> bool:
        threading.Event().wait(0.02)  # the copy takes this long
        return self.inner.put(batch)

    def close(self) -> None:
        self.inner.close()

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def watch(self, watch: Any, /) -> None:
        self.inner.watch(watch)


def test_a_slow_copy_into_the_sink_is_sink(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(8)

    sink = SlowPut()
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, sink=sink)
    with feed:
        for _ in range(20):
            assert sink.inner.dequeue(timeout=10) is not None
        stats = feed.stats()
    assert main_cause(stats.consumer_wait_by_cause) == "sink"
    assert stats.starvation > 0.5


def test_a_fast_sink_behind_a_slow_fetch_is_not_sink(counter: CounterSource) -> None:
    """A batch the sink's thread already put is no longer "being handed": the reader's
    waits go to the slow fetch, not to the sink."""

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        threading.Event().wait(0.02)  # a slow service
        return counter.chunk(8)

    sink = af.BlobsQueue(capacity=2, num_blobs=2)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, sink=sink, concurrency=1)
    with feed:
        for _ in range(20):
            assert sink.dequeue(timeout=10) is not None
        stats = feed.stats()
    assert main_cause(stats.consumer_wait_by_cause) == "fetch_limit", stats.consumer_wait_by_cause
    assert stats.consumer_wait_by_cause.get("sink", 0.0) < 0.1 * stats.consumer_wait_s


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
async def test_calls_with_worker_processes_are_workers() -> None:
    feed = af.Feed.from_keys(
        range(60), pf.slow_key_rows, blobs=["ids", "x"], batch_size=4, concurrency=2,
        workers=af.Processes(2, start_method="fork"),
    )  # fmt: skip
    async with feed:
        async for _ in feed:
            pass
    assert main_cause(feed.stats().consumer_wait_by_cause) == "workers"


class Blocking:
    """A fetcher held until released, whose ``load()`` says when a consumer's wait began
    (the feed asks it for the wait's cause)."""

    def __init__(self, counter: CounterSource) -> None:
        self.counter = counter
        self.release = threading.Event()
        self.probed = threading.Event()

    def __call__(self, worker_id: int, batch_size: int) -> list[np.ndarray]:
        self.release.wait(10)
        return self.counter.chunk(4)

    def load(self) -> dict[str, float]:
        self.probed.set()
        return {}


async def test_a_get_that_waits_is_counted_with_its_cause(counter: CounterSource) -> None:
    fetch = Blocking(counter)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=1)
    await to_thread(feed.start, name="test-start")
    try:
        getter = asyncio.ensure_future(to_thread(feed.get, name="test-get"))
        assert await to_thread(fetch.probed.wait, 10, name="test-wait")  # get() is waiting
        fetch.release.set()
        assert (await getter).rows == 4
        stats = feed.stats()
        assert stats.consumer_waits == 1 and stats.consumer_wait_s > 0
        assert list(stats.consumer_wait_by_cause) == ["fetch_limit"]
    finally:
        await to_thread(feed.stop, name="test-stop")


async def test_a_throttling_service_is_throttled() -> None:
    """A service that allows 100 requests/s answers the rest 429: the host's rate limit
    holds requests back, and the consumer's waits are laid at that door."""
    async with af.ImageService(count=16, size=16, fmt="png", max_rate=100) as service:
        feed = af.Feed.from_keys(
            service.urls(300), af.HttpFetcher(adaptive=True, decode_threads=2),
            blobs=["data"], batch_size=8, concurrency=32, log_interval=None,
        )  # fmt: skip
        async with feed:
            async for _ in feed:
                pass
    stats = feed.stats()
    assert stats.rows_delivered == 300 and service.throttled > 0
    assert main_cause(stats.consumer_wait_by_cause) == "throttled", stats.consumer_wait_by_cause


async def test_a_busy_decode_pool_is_decode() -> None:
    """One decode thread, and every image takes it 20 ms (a heavy transform): fetched bodies
    queue for it, and that is where the consumer's waits come from."""

    def heavy(image: np.ndarray, key: Any) -> np.ndarray:
        time.sleep(0.02)  # the work of a CPU-heavy decode, holding the only decode thread
        return image

    async with af.ImageService(count=16, size=16, fmt="png") as service:
        feed = af.Feed.from_keys(
            service.urls(120), af.HttpFetcher(transform=heavy, decode_threads=1),
            blobs=["data"], batch_size=8, concurrency=16, log_interval=None,
        )  # fmt: skip
        async with feed:
            async for _ in feed:
                pass
    stats = feed.stats()
    assert stats.rows_delivered == 120
    assert main_cause(stats.consumer_wait_by_cause) == "decode", stats.consumer_wait_by_cause
