"""Keyed sources: finite data, key order, sharding, end of data, drop_last."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.keys import Reorderer, check_shard
from tests.conftest import check_accounting


def chunk_for(key: int) -> list[np.ndarray]:
    return [np.array([key], np.int64), np.full((1, 4), key, np.float32)]


async def jittery(key: int) -> list[np.ndarray]:
    for _ in range(random.Random(key).randrange(5)):  # finish out of key order
        await asyncio.sleep(0)
    return chunk_for(key)


async def drain(feed: af.Feed) -> list[list[int]]:
    async with feed:
        return [b["ids"].tolist() async for b in feed]


@pytest.mark.parametrize("concurrency", [1, 3, 16])
async def test_ordered_keys_arrive_in_key_order(concurrency: int) -> None:
    feed = af.Feed.from_keys(
        range(103),
        jittery,
        blobs=["ids", "x"],
        batch_size=10,
        concurrency=concurrency,
        ordered=True,
    )
    batches = await drain(feed)
    assert [len(b) for b in batches] == [10] * 10 + [3]  # the final partial batch flushed
    assert sum(batches, []) == list(range(103))
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_delivered == 103 and stats.rows_dropped == 0


async def test_unordered_keys_each_once() -> None:
    feed = af.Feed.from_keys(range(200), jittery, blobs=["ids", "x"], batch_size=16, concurrency=8)
    rows = sum(await drain(feed), [])
    assert sorted(rows) == list(range(200))


async def test_drop_last_counts_the_partial_batch() -> None:
    feed = af.Feed.from_keys(
        range(45), jittery, blobs=["ids", "x"], batch_size=10, drop_last=True, ordered=True
    )
    batches = await drain(feed)
    assert sum(batches, []) == list(range(40))
    stats = feed.stats()
    assert stats.dropped_by_cause == {"drop_last": 5}
    check_accounting(stats)


@pytest.mark.parametrize("world_size", [1, 2, 3])
async def test_shards_partition_the_keys(world_size: int) -> None:
    seen: list[int] = []
    for rank in range(world_size):
        feed = af.Feed.from_keys(
            range(50),
            jittery,
            blobs=["ids", "x"],
            batch_size=4,
            ordered=True,
            shard=(rank, world_size),
        )
        rows = sum(await drain(feed), [])
        assert rows == list(range(rank, 50, world_size))
        seen += rows
    assert sorted(seen) == list(range(50))


async def test_async_iterable_keys_and_sync_fetch_one() -> None:
    async def keys() -> AsyncIterator[int]:
        for k in range(30):
            await asyncio.sleep(0)
            yield k

    feed = af.Feed.from_keys(keys(), chunk_for, blobs=["ids", "x"], batch_size=7, ordered=True)
    assert sum(await drain(feed), []) == list(range(30))


async def test_empty_keys_end_at_once() -> None:
    feed = af.Feed.from_keys([], jittery, blobs=["ids", "x"], batch_size=4)
    assert await drain(feed) == []


async def test_failed_key_is_named_and_skipped_in_order() -> None:
    async def fetch_one(key: int) -> list[np.ndarray]:
        if key in (5, 17):
            raise OSError(f"cannot read {key}")
        return await jittery(key)

    feed = af.Feed.from_keys(
        range(30), fetch_one, blobs=["ids", "x"], batch_size=4, ordered=True, max_errors=2
    )
    assert sum(await drain(feed), []) == [k for k in range(30) if k not in (5, 17)]

    strict = af.Feed.from_keys(range(30), fetch_one, blobs=["ids", "x"], batch_size=4)
    with pytest.raises(
        af.FetchError, match=r"^fetch failed in key 5: OSError: cannot read 5$"
    ) as info:
        await drain(strict)
    assert info.value.key == 5 and info.value.worker_id is None


async def test_key_iteration_error_is_a_fetch_error() -> None:
    def keys() -> Iterator[int]:
        yield 1
        raise LookupError("listing failed")

    feed = af.Feed.from_keys(keys(), jittery, blobs=["ids", "x"], batch_size=4)
    with pytest.raises(af.FetchError, match="iterating the keys failed: LookupError"):
        await drain(feed)


async def test_endless_keys_with_early_stop() -> None:
    import itertools

    feed = af.Feed.from_keys(
        itertools.count(), jittery, blobs=["ids", "x"], batch_size=8, ordered=True
    )
    async with feed:
        first = [(await anext(feed))["ids"].tolist() for _ in range(3)]
    assert sum(first, []) == list(range(24))
    check_accounting(feed.stats())


async def test_reorderer_releases_in_sequence() -> None:
    order: list[int] = []
    reorder = Reorderer()

    async def finish(seq: int) -> None:
        await reorder.wait_turn(seq)
        order.append(seq)
        reorder.done(seq)

    await asyncio.gather(*(finish(s) for s in [3, 1, 4, 0, 2]))
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ((2, 2), r"^shard rank must be in \[0, 2\), got 2$"),
        ((0, 0), r"world_size >= 1"),
        ((-1, 3), r"^shard rank must be in \[0, 3\), got -1$"),
        ("ab", r"world_size >= 1"),
        (5, r"^shard must be a \(rank, world_size\) pair, got 5$"),
    ],
)
def test_bad_shards(shard: object, message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        check_shard(shard)
