"""Fetch workers (fetch.py): what a worker holds between calls."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.bridge import to_thread

pytestmark = pytest.mark.timeout(20)


class FirstChunkWatch:
    """A fetcher whose first call returns a one-row chunk (watched through a weak reference)
    and whose second call blocks until released: is the first chunk still held meanwhile?"""

    def __init__(self) -> None:
        self.first: weakref.ref[np.ndarray] | None = None
        self.in_second = threading.Event()
        self.release = threading.Event()

    def make(self, calls: int) -> list[np.ndarray] | None:
        if calls == 0:
            row = np.arange(4, dtype=np.float32)[None]
            self.first = weakref.ref(row)
            return [row]
        self.in_second.set()
        assert self.release.wait(10)
        return None

    def first_alive(self) -> bool:
        gc.collect()
        assert self.first is not None
        return self.first() is not None


async def wait_for(event: threading.Event) -> None:
    assert await to_thread(event.wait, 10, name="test-wait")


@pytest.mark.parametrize("flavour", ["async", "sync", "keyed-async", "keyed-sync"])
async def test_a_worker_holds_no_chunk_while_its_next_call_runs(flavour: str) -> None:
    """Each worker held its last chunk (a decoded image, say) until its next call returned:
    ``concurrency`` chunks more than the queues account for."""
    watch = FirstChunkWatch()
    calls = [0]

    def sync_fetch(*_: Any) -> list[np.ndarray] | None:
        calls[0] += 1
        return watch.make(calls[0] - 1)

    async def async_fetch(*_: Any) -> list[np.ndarray] | None:
        calls[0] += 1
        if calls[0] == 1:
            return watch.make(0)
        watch.in_second.set()
        await wait_for(watch.release)
        return None

    fn = async_fetch if flavour.endswith("async") else sync_fetch
    if flavour.startswith("keyed"):
        feed = af.Feed.from_keys([0, 1], fn, blobs=["x"], batch_size=1, concurrency=1)
    else:
        feed = af.Feed(fn, blobs=["x"], batch_size=1, concurrency=1, max_buffered_chunks=2)
    try:
        async with feed:
            batch = await anext(feed)  # a view of the first chunk (one chunk, one batch)
            assert batch["x"].tolist() == [[0, 1, 2, 3]]
            del batch
            await wait_for(watch.in_second)  # the worker queued the chunk, then awaited
            assert not watch.first_alive()
    finally:
        watch.release.set()


class NothingYet:
    """A fetcher with nothing to give, ever; counts its calls, and says when it has been
    called ``ready_after`` times (the feed is past its start-up)."""

    def __init__(self, ready_after: int = 50) -> None:
        self.calls = 0
        self.ready_after = ready_after
        self.ready = threading.Event()

    def __call__(self, worker_id: int, batch_size: int) -> None:
        self.calls += 1
        if self.calls >= self.ready_after:
            self.ready.set()
        return None


class AsyncNothingYet(NothingYet):
    async def __call__(self, worker_id: int, batch_size: int) -> None:  # type: ignore[override]
        return super().__call__(worker_id, batch_size)


@pytest.mark.parametrize("kind", ["async", "pumped", "executor"])
async def test_a_feed_whose_fetchers_return_only_none_uses_under_5_percent_of_a_core(
    kind: str,
) -> None:
    """None means "nothing this time": the worker backs off (1 ms doubling to 50 ms)."""
    import concurrent.futures
    import time

    fetch: Any = AsyncNothingYet(ready_after=4 * 8) if kind == "async" else NothingYet(4 * 8)
    pool = concurrent.futures.ThreadPoolExecutor(4) if kind == "executor" else None
    feed = af.Feed(fetch, blobs=["x"], batch_size=4, concurrency=4, executor=pool)
    try:
        async with feed:
            assert await to_thread(fetch.ready.wait, 10, name="test-wait")  # past the ramp
            cpu, wall = time.process_time(), time.monotonic()
            calls = fetch.calls
            await to_thread(threading.Event().wait, 1.0, name="test-idle")  # let it idle
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            calls = fetch.calls - calls
    finally:
        if pool is not None:
            pool.shutdown()
    assert cpu / wall < 0.05, f"{cpu / wall:.1%} of a core"
    # 4 workers at one call per 50 ms: about 80 calls a second, not thousands
    assert calls <= 4 * (wall / 0.05 + 8), calls
    assert feed.stats().fetch_none >= 4 * 8
