"""``processes=N`` transport: the shared-memory ring, its zero-copy views, their release."""

from __future__ import annotations

import gc
import mmap
import os
from collections.abc import Iterator

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.procs import ring
from tests import procs_fetchers as pf
from tests.conftest import check_accounting
from tests.procs_support import array_root as _root
from tests.procs_support import no_leaks

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    with no_leaks():
        yield


async def test_big_chunks_come_back_through_shared_memory_intact() -> None:
    feed = af.Feed(
        pf.images, blobs=["ids", "x"], batch_size=24, concurrency=4, processes=2, log_interval=None
    )
    async with feed:
        for _ in range(30):
            batch = await anext(feed)
            assert batch["x"].shape == (24, 3, 64, 64) and batch["x"].flags.writeable
            expected = batch["ids"].astype(np.float32)[:, None, None, None]
            assert np.array_equal(batch["x"], np.broadcast_to(expected, (24, 3, 64, 64)))
        check_accounting(feed.stats())


async def test_whole_batch_chunks_are_zero_copy_views_of_the_ring() -> None:
    feed = af.Feed(
        pf.whole_batches,
        blobs=["ids", "x"],
        batch_size=8,
        concurrency=2,
        processes=2,
        log_interval=None,
    )
    async with feed:
        batches = [await anext(feed) for _ in range(12)]
    roots = [_root(b["x"]) for b in batches]
    assert all(isinstance(r, memoryview) and isinstance(r.obj, mmap.mmap) for r in roots)
    for b in batches:  # still valid after the workers are gone
        assert np.array_equal(b["x"][:, 0, 0, 0], b["ids"].astype(np.float32))
    ids = [int(i) for b in batches for i in b["ids"]]
    assert len(ids) == len(set(ids)) == 96


def _ring_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum("asyncfeed-ring" in line for line in maps)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
async def test_a_stopped_feed_keeps_no_ring_mapped_once_its_batches_are_gone() -> None:
    feed = af.Feed(
        pf.whole_batches,
        blobs=["ids", "x"],
        batch_size=8,
        concurrency=2,
        processes=2,
        log_interval=None,
    )
    async with feed:
        held = [await anext(feed) for _ in range(4)]
        assert _ring_mappings() == 2
    assert _ring_mappings() >= 1  # the batches still view a ring
    del held
    gc.collect()
    assert _ring_mappings() == 0  # though the feed object is still here
    assert feed.state is af.FeedState.STOPPED


async def test_ring_slots_come_back_when_batches_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ring, "RING_BYTES", 1 << 20)  # room for two chunks of 8 x 48 KiB
    feed = af.Feed(
        pf.whole_batches,
        blobs=["ids", "x"],
        batch_size=8,
        concurrency=2,
        processes=1,
        max_buffered_chunks=2,
        log_interval=None,
    )
    async with feed:
        held = [await anext(feed) for _ in range(6)]  # these pin their slots
        assert 1 <= sum(isinstance(_root(b["x"]), memoryview) for b in held) <= 2
        del held  # the rest came inline; now every slot is free again
        via_ring = 0
        for _ in range(20):
            batch = await anext(feed)
            assert np.array_equal(batch["x"][:, 2, 3, 4], batch["ids"].astype(np.float32))
            via_ring += isinstance(_root(batch["x"]), memoryview)
            del batch
    assert via_ring > 2  # more chunks than the ring holds: slots were reused


def test_process_feed_into_a_sink_releases_ring_slots_from_the_reader_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ring, "RING_BYTES", 1 << 20)  # two slots: reuse needs cross-thread frees
    sink = af.BlobsQueue(capacity=2, num_blobs=2)
    feed = af.Feed(
        pf.whole_batches,
        blobs=["ids", "x"],
        batch_size=8,
        concurrency=2,
        processes=1,
        max_buffered_chunks=2,
        sink=sink,
        log_interval=None,
    )
    feed.start()
    try:
        via_ring = 0
        for _ in range(30):
            record = sink.dequeue(timeout=30)
            assert record is not None
            ids, x = record
            assert np.array_equal(x[:, 1, 2, 3], ids.astype(np.float32))
            via_ring += isinstance(_root(x), memoryview)
            del record, ids, x
    finally:
        feed.stop()
    assert via_ring > 2
    check_accounting(feed.stats())
