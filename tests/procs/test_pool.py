"""``processes=2``: exact batches, every row once, key order, shards, worker_init, stats, start."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Iterator

import numpy as np
import pytest

import asyncfeed as af
from tests import procs_fetchers as pf
from tests.conftest import check_accounting, check_batch
from tests.procs_support import no_leaks

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    with no_leaks():
        yield


@pytest.mark.parametrize("fetch", [pf.seed_rows, pf.sync_seed_rows])
async def test_seed_feed_gives_exact_batches_of_unique_rows_from_two_workers(fetch: object) -> None:
    feed = af.Feed(
        fetch,  # type: ignore[arg-type]
        blobs=["ids", "x", "pid"],
        batch_size=16,
        concurrency=4,
        processes=2,
        log_interval=None,
    )
    seen: list[int] = []
    owner: dict[int, int] = {}
    async with feed:
        while len(set(owner.values())) < 2 or len(seen) < 640:  # both workers contribute
            batch = await anext(feed)
            assert batch.rows == 16
            seen += check_batch(af.Batch({"ids": batch["ids"], "x": batch["x"]}, 0, 16), 16)
            for row_id, pid in zip(batch["ids"].tolist(), batch["pid"].tolist(), strict=True):
                assert owner.setdefault(row_id // 1_000_000, pid) == pid  # one process per id
        stats = feed.stats()
        check_accounting(stats)
    assert len(seen) == len(set(seen))
    assert set(owner) <= set(feed.worker_ids)
    assert os.getpid() not in owner.values()
    check_accounting(feed.stats())
    assert stats.fetch_calls >= 640 // 5 and stats.fetch_errors == 0


async def test_keyed_feed_keeps_key_order_across_processes() -> None:
    keys = range(400)
    feed = af.Feed.from_keys(
        keys,
        pf.key_rows,
        blobs=["ids", "x"],
        batch_size=32,
        concurrency=8,
        ordered=True,
        processes=2,
        log_interval=None,
    )
    async with feed:
        batches = [b async for b in feed]
    ids = [i for b in batches for i in check_batch(b, 32)]
    assert ids == pf.expected_key_ids(keys)
    assert [b.rows for b in batches[:-1]] == [32] * (len(batches) - 1)
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_delivered == len(ids) and stats.rows_in_flight == stats.rows_dropped == 0
    assert stats.fetch_calls == 400


async def test_keyed_feed_shards_drops_last_and_passes_none_and_mappings() -> None:
    keys = range(300)
    feed = af.Feed.from_keys(
        keys,
        pf.async_key_rows,
        blobs=["ids", "x"],
        batch_size=16,
        concurrency=6,
        shard=(1, 3),
        drop_last=True,
        processes=2,
        log_interval=None,
    )
    async with feed:
        ids = sorted(i for b in [b async for b in feed] for i in check_batch(b, 16))
    mine = [k for k in keys if k % 3 == 1 and k % 7 != 6]
    expected = pf.expected_key_ids(mine)
    tail = len(expected) % 16
    stats = feed.stats()
    check_accounting(stats)
    assert len(ids) == len(expected) - tail and set(ids) <= set(expected)
    assert stats.dropped_by_cause == ({"drop_last": tail} if tail else {})
    assert stats.fetch_none == sum(1 for k in keys if k % 3 == 1 and k % 7 == 6)


async def test_worker_init_runs_once_in_each_worker() -> None:
    feed = af.Feed(
        pf.init_index_rows,
        blobs=["ids", "index", "pid"],
        batch_size=8,
        concurrency=4,
        processes=2,
        worker_init=pf.remember_index,
        log_interval=None,
    )
    index_of: dict[int, int] = {}
    async with feed:
        while len(index_of) < 2:  # until both workers have answered
            batch = await anext(feed)
            for index, pid in zip(batch["index"].tolist(), batch["pid"].tolist(), strict=True):
                assert index_of.setdefault(pid, index) == index
    assert sorted(index_of.values()) == [0, 1]


async def test_host_stats_of_the_workers_are_merged() -> None:
    feed = af.Feed(
        pf.HostCounting(),
        blobs=["ids", "x"],
        batch_size=8,
        concurrency=2,
        processes=2,
        log_interval=None,
    )
    async with feed:
        for _ in range(20):
            await anext(feed)
    stats = feed.stats()
    host = stats.hosts["example.org"]
    assert host["workers"] == 2  # one per worker process, summed
    # a worker also counts the calls in flight when the feed stopped (one per fetch worker
    # at most): their results were never taken, so the feed did not count them
    assert 20 * 8 // 5 <= host["requests"] <= stats.fetch_calls + feed.options.max_concurrency
    assert host["p99"] == 5.0  # a peak: the larger of the two, not their sum


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
async def test_fork_needs_no_pickling() -> None:
    start = multiprocessing.get_all_start_methods()
    if "fork" not in start:
        pytest.skip("no fork on this platform")
    offset = 7

    async def local_fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return pf.rows(np.arange(3) + offset + worker_id * 1_000_000)

    feed = af.Feed(
        local_fetch,
        blobs=["ids", "x"],
        batch_size=6,
        concurrency=2,
        processes=2,
        start_method="fork",
        log_interval=None,
    )
    async with feed:
        batch = await anext(feed)
    assert batch.rows == 6
    assert {i % 1_000_000 for i in batch["ids"].tolist()} == {7, 8, 9}


def test_sync_programs_start_get_and_stop_a_process_feed() -> None:
    feed = af.Feed(
        pf.sync_seed_rows,
        blobs=["ids", "x", "pid"],
        batch_size=10,
        concurrency=2,
        processes=2,
        start_method="forkserver",
        log_interval=None,
    )
    feed.start()
    try:
        rows = [feed.get(timeout=30).rows for _ in range(10)]
    finally:
        feed.stop()
    assert rows == [10] * 10
    check_accounting(feed.stats())
