"""Bounded memory over long runs: the traced high-water mark stays within the configured
buffers plus a fixed margin, and nothing accumulates from one stretch of the run to the next."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.sinks import BlobsQueue
from asyncfeed.sizing import pump_ahead

pytestmark = pytest.mark.timeout(60)

ROW_FLOATS = 1024  # 4 KiB rows
CHUNK_ROWS = 24
MARGIN = 2 << 20


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def row_chunk(n: int) -> list[np.ndarray]:
    return [np.full((n, ROW_FLOATS), 1.0, np.float32)]


def bound(*, chunks: int, workers: int, batch_size: int, batches: int) -> int:
    """Bytes the feed may hold: queue + one chunk per worker + carry + batches in hand."""
    chunk = CHUNK_ROWS * ROW_FLOATS * 4
    batch = batch_size * ROW_FLOATS * 4
    return (chunks + workers) * chunk + (batches + 2) * batch


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_fast_fetcher_and_a_slow_consumer_stay_within_the_buffers(
    traced: None, flavour: str
) -> None:
    async def afetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return row_chunk(CHUNK_ROWS)

    def sfetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return row_chunk(CHUNK_ROWS)

    feed = af.Feed(
        afetch if flavour == "async" else sfetch,
        blobs=["x"],
        batch_size=40,
        concurrency=4,
        max_buffered_chunks=32,
        prefetch_batches=2,
        log_interval=None,
    )
    # a sync fetcher's thread may run pump_ahead() results ahead of its worker
    ahead = 0 if flavour == "async" else pump_ahead(32, 4)
    limit = bound(chunks=32 + 4 * ahead, workers=4, batch_size=40, batches=2 + 1) + MARGIN
    marks: list[int] = []
    async with feed:
        async for batch in feed:
            await asyncio.sleep(0.0005)  # the slow consumer (system under test)
            del batch
            if feed.stats().batches_delivered == 200:
                tracemalloc.reset_peak()  # warmed up: buffers are full from here on
            if feed.stats().batches_delivered % 400 == 0:
                marks.append(tracemalloc.get_traced_memory()[0])
            if feed.stats().batches_delivered == 2000:
                break
        peak = tracemalloc.get_traced_memory()[1]
    assert peak < limit, f"traced peak {peak >> 10} KiB over the bound {limit >> 10} KiB"
    assert max(marks[1:]) - marks[1] < MARGIN, f"memory grew: {marks}"


async def test_a_huge_chunk_is_cut_without_piling_up_batches(traced: None) -> None:
    big = np.asfortranarray(np.ones((4096, ROW_FLOATS), np.float32))  # 16 MiB, not C order
    served = [False]

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
        if served[0]:
            return None
        served[0] = True
        return [big]  # every batch cut from it is a copy

    feed = af.Feed(fetch, blobs=["x"], batch_size=64, concurrency=1, log_interval=None)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    async with feed:
        for _ in range(20):
            batch = await anext(feed)
            assert batch["x"].flags.c_contiguous and not np.shares_memory(batch["x"], big)
            del batch
        peak = tracemalloc.get_traced_memory()[1]
    # the prefetched batches and the one in hand, not the chunk's 64 batches at once
    assert peak - base < 6 * 64 * ROW_FLOATS * 4 + MARGIN, (peak - base) >> 10


def test_a_sink_feed_over_many_batches_holds_no_more_than_its_buffers(traced: None) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return row_chunk(CHUNK_ROWS)

    q = BlobsQueue(capacity=4, num_blobs=1)
    feed = af.Feed(fetch, blobs=["x"], batch_size=48, concurrency=2, max_buffered_chunks=16, sink=q)
    feed.start()
    try:
        for n in range(1, 1501):
            record = q.dequeue(timeout=10)
            assert record is not None and record[0].shape == (48, ROW_FLOATS)
            del record
            if n == 100:
                tracemalloc.reset_peak()
    finally:
        feed.stop()
    peak = tracemalloc.get_traced_memory()[1]
    limit = bound(chunks=16, workers=2, batch_size=48, batches=2 + 4 + 4 + 1) + MARGIN
    assert peak < limit, f"traced peak {peak >> 10} KiB over the bound {limit >> 10} KiB"
