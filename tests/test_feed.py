"""Feeds on the caller's loop: exact batches, every row once, order, sources, stats."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

import asyncfeed as af
from tests.conftest import CounterSource, check_accounting, check_batch


async def collect(feed: af.Feed, rows: int) -> list[int]:
    seen: list[int] = []
    async for batch in feed:
        seen += check_batch(batch, feed.batch_size)
        if len(seen) >= rows:
            break
    return seen


@pytest.mark.parametrize("chunk_rows", [1, 7, 32, 100])
async def test_exact_batches_every_row_once(counter: CounterSource, chunk_rows: int) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(chunk_rows)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=32, concurrency=8)
    async with feed:
        seen = await collect(feed, 3200)
    assert len(seen) == len(set(seen)) == 3200
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_in_flight == 0
    assert stats.rows_fetched == counter.issued
    assert stats.rows_delivered == 3200 and stats.batches_delivered == 100
    assert stats.dropped_by_cause == ({"stop": stats.rows_dropped} if stats.rows_dropped else {})


async def test_rows_keep_fetch_order_with_one_worker(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(5)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=16, concurrency=1)
    async with feed:
        seen = await collect(feed, 480)
    assert seen == list(range(480))


async def test_rows_of_one_chunk_stay_together_and_in_order() -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return [np.full(10, worker_id), np.arange(10)]

    feed = af.Feed(fetch, blobs=["w", "pos"], batch_size=10, concurrency=4)
    async with feed:
        async for batch in feed:
            assert len(set(batch["w"].tolist())) == 1  # one chunk per batch here
            assert batch["pos"].tolist() == list(range(10))
            if batch.index == 50:
                break


async def test_two_sources_never_mix() -> None:
    def source(tag: int):  # type: ignore[no-untyped-def]
        async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
            await asyncio.sleep(0)
            return [np.full(3, tag)]

        return fetch

    train = af.Feed(source(1), blobs=["t"], batch_size=8, source="train")
    test = af.Feed(source(2), blobs=["t"], batch_size=8, source="test")
    async with train, test:
        for _ in range(20):
            a = await anext(train)
            b = await anext(test)
            assert set(a["t"].tolist()) == {1}
            assert set(b["t"].tolist()) == {2}


async def test_feeds_of_one_source_share_rows_each_delivered_once(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(3)

    one = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, source="shared")
    two = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, source="shared")
    seen: list[int] = []
    async with one, two:
        for _ in range(50):
            seen += check_batch(await anext(one), 8)
            seen += check_batch(await anext(two), 8)
        check_accounting(one.stats())
        assert one.stats().rows_fetched == two.stats().rows_fetched  # one ledger per source
    assert len(seen) == len(set(seen)) == 800
    final = two.stats()
    check_accounting(final)
    assert final.rows_in_flight == 0 and final.rows_delivered == 800


async def test_none_and_empty_chunks_are_counted_not_errors(
    counter: CounterSource, caplog: pytest.LogCaptureFixture
) -> None:
    calls = itertools.count()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
        n = next(calls)
        if n % 3 == 0:
            return None
        if n % 3 == 1:
            return counter.chunk(0)
        return counter.chunk(4)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1)
    async with feed:
        seen = await collect(feed, 80)
    stats = feed.stats()
    assert seen == list(range(80))
    assert stats.fetch_none >= 20 and stats.fetch_empty >= 20 and stats.fetch_errors == 0
    assert sum("zero-row chunk" in r.message for r in caplog.records) == 1


async def test_rebatch_off_delivers_chunks_as_they_come(counter: CounterSource) -> None:
    sizes = itertools.cycle([1, 5, 12])

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(next(sizes))

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1, rebatch=False)
    async with feed:
        rows = [b.rows async for b in _take(feed, 6)]
    assert rows == [1, 5, 12, 1, 5, 12]


async def _take(feed: af.Feed, n: int):  # type: ignore[no-untyped-def]
    async for batch in feed:
        yield batch
        n -= 1
        if n == 0:
            return


async def test_init_fun_runs_once_before_the_first_fetch(counter: CounterSource) -> None:
    events: list[str] = []

    def init(feed: af.Feed) -> None:
        events.append("init")

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        events.append("fetch")
        return counter.chunk(8)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=3, init_fun=init)
    async with feed:
        await collect(feed, 64)
    assert events[0] == "init" and events.count("init") == 1


async def test_async_init_fun_gets_the_feed(counter: CounterSource) -> None:
    got: list[af.Feed] = []

    async def init(feed: af.Feed) -> None:
        got.append(feed)

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(8)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, init_fun=init)
    async with feed:
        await anext(feed)
    assert got == [feed]


async def test_worker_ids_are_unique_across_feeds() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    feeds = [af.Feed(fetch, blobs=["x"], batch_size=1, concurrency=5) for _ in range(4)]
    ids = [w for f in feeds for w in f.worker_ids]
    assert len(ids) == len(set(ids)) == 20
    seen: set[int] = set()

    async def recording(worker_id: int, batch_size: int) -> list[np.ndarray]:
        seen.add(worker_id)
        await asyncio.sleep(0)
        return [np.zeros(1)]

    feed = af.Feed(recording, blobs=["x"], batch_size=4, concurrency=3)
    async with feed:
        for _ in range(20):
            await anext(feed)
    assert seen == set(feed.worker_ids)


async def test_batch_size_hint_reaches_the_fetcher() -> None:
    hints: set[int] = set()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        hints.add(batch_size)
        return [np.zeros(batch_size)]

    feed = af.Feed(fetch, blobs=["x"], batch_size=24)
    async with feed:
        assert (await anext(feed)).rows == 24
    assert hints == {24}


async def test_stats_invariant_holds_under_load(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(worker_id % 13 + 1)

    feed = af.Feed(
        fetch, blobs=counter.blobs, batch_size=64, concurrency=16, max_buffered_chunks=50
    )
    async with feed:
        async for batch in feed:
            stats = feed.stats()
            check_accounting(stats)
            assert stats.chunk_queue_depth <= 50
            assert stats.rows_queued <= 50 * 13 + 16 * 13  # queue + one chunk per waiting worker
            if batch.index == 200:
                break
    final = feed.stats()
    check_accounting(final)
    assert final.rows_in_flight == 0 and final.state == "stopped"
    assert final.fetch_calls >= final.rows_fetched / 13 and final.mean_fetch_time > 0


async def test_backpressure_bounds_what_is_fetched() -> None:
    calls = itertools.count()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        next(calls)
        return [np.zeros(1)]

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, concurrency=2, max_buffered_chunks=10)
    async with feed:
        await anext(feed)
        for _ in range(20):
            await asyncio.sleep(0)  # give fetchers every chance to overrun the bound
        stats = feed.stats()
    # queue (10) + prefetched batches (2 x 4) + one batch taken (4) + one chunk per worker (2)
    assert stats.rows_fetched <= 10 + 8 + 4 + 2 + 4
    assert next(calls) <= 10 + 8 + 4 + 2 + 4 + 1


@pytest.mark.parametrize(
    ("keys", "shard", "drop_last", "expected"),
    [(range(10), None, False, 3), (range(10), None, True, 2), (range(10), (1, 3), False, 1)],
)
def test_len_of_a_keyed_feed_is_its_batches_per_epoch_for_this_rank(
    keys: range, shard: tuple[int, int] | None, drop_last: bool, expected: int
) -> None:
    feed = af.Feed.from_keys(
        keys, lambda k: [np.array([k])], blobs=["x"], batch_size=4, shard=shard,
        drop_last=drop_last,
    )  # fmt: skip
    assert len(feed) == expected
    with feed:
        assert sum(1 for _ in feed) == expected  # one row per key: the count holds


def test_len_is_refused_where_it_is_not_known() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    with pytest.raises(TypeError, match=r"^a seed-style feed has no length"):
        len(af.Feed(fetch, blobs=["x"], batch_size=4))
    keyed = af.Feed.from_keys(iter(range(3)), lambda k: None, blobs=["x"], batch_size=4)
    with pytest.raises(TypeError, match=r"^the keys of this feed have no len\(\)"):
        len(keyed)


def test_progress_wraps_sync_iteration_and_closes_its_bar() -> None:
    import io

    out = io.StringIO()
    feed = af.Feed.from_keys(range(40), lambda k: [np.array([k])], blobs=["x"], batch_size=4)
    with feed:
        rows = [int(v) for batch in feed.progress(file=out, interval=0) for v in batch["x"]]
    assert rows == list(range(40))
    text = out.getvalue()
    assert "40.0 rows" in text and "skipped=0, retried=0, waiting=" in text


async def test_progress_wraps_async_iteration() -> None:
    import io

    async def fetch_one(key: int) -> list[np.ndarray]:
        return [np.array([key])]

    out = io.StringIO()
    feed = af.Feed.from_keys(range(12), fetch_one, blobs=["x"], batch_size=4)
    async with feed:
        got = [batch.rows async for batch in feed.progress(file=out, interval=0)]
    assert got == [4, 4, 4] and "12.0 rows" in out.getvalue()
