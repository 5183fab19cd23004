"""Stopping a ``RayActors`` feed from every state: within its timeout, nothing left in Ray."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import ray

import asyncfeed as af
from tests.conftest import check_accounting
from tests.procs_support import array_root
from tests.ray import fetchers
from tests.ray.support import FETCH, alive, feed_actors, held_refs, store_stats

pytestmark = [pytest.mark.ray, pytest.mark.timeout(60)]

TIMEOUT = 2.0
BOUND = TIMEOUT + 0.25  # what Feed.stop(timeout=T) promises


@pytest.fixture
def probe() -> Iterator[Any]:
    handle = fetchers.Probe.remote()  # type: ignore[attr-defined]
    yield handle
    ray.kill(handle)


def _feed(source: str, fn: Any, *, resources: Any = None, **kw: Any) -> af.Feed:
    workers = af.RayActors(2, resources=resources or {FETCH: 0.01})
    opts: dict[str, Any] = {
        "blobs": ["ids", "node"],
        "batch_size": 8,
        "concurrency": 8,
        "source": source,
        "workers": workers,
        "log_interval": None,
    }
    return af.Feed.from_keys(range(100), fn, **(opts | kw))


async def _timed_close(feed: af.Feed) -> float:
    start = time.monotonic()
    await feed.aclose(timeout=TIMEOUT)
    return time.monotonic() - start


def _nothing_left(source: str) -> None:
    assert alive(source) == [], feed_actors(source)
    assert held_refs() == {}


async def test_stop_while_actors_cannot_be_placed() -> None:
    feed = _feed("placing", fetchers.tagged, resources={"nowhere": 1})
    await feed.__aenter__()
    assert await _timed_close(feed) <= BOUND
    _nothing_left("placing")


async def test_stop_while_worker_init_hangs(probe: Any) -> None:
    async def init(index: int) -> None:
        await probe.arrived.remote(index)
        await asyncio.Event().wait()

    workers = af.RayActors(2, resources={FETCH: 0.01}, worker_init=init)
    feed = _feed("starting", fetchers.tagged, workers=workers)
    await feed.__aenter__()
    await probe.wait_for.remote(2)  # both actors placed, neither started
    assert await _timed_close(feed) <= BOUND
    _nothing_left("starting")


async def test_stop_while_every_call_hangs_in_an_actor(probe: Any) -> None:
    feed = _feed("hanging", fetchers.Blocking(probe, index=None))
    await feed.__aenter__()
    await probe.wait_for.remote(8)
    assert await _timed_close(feed) <= BOUND
    check_accounting(feed.stats())
    _nothing_left("hanging")


async def test_stop_after_an_error_and_after_the_end() -> None:
    failed = _feed("failing", fetchers.fails_on_sevens)
    await failed.__aenter__()
    with pytest.raises(af.FetchError):
        [b async for b in failed]
    assert await _timed_close(failed) <= BOUND
    _nothing_left("failing")
    ended = _feed("ended", fetchers.tagged)
    async with ended:
        assert sum([b.rows async for b in ended]) == 100
    assert await _timed_close(ended) < 0.1  # already stopped: idempotent
    _nothing_left("ended")


async def test_stop_before_start_creates_nothing() -> None:
    feed = _feed("unstarted", fetchers.tagged)
    assert await _timed_close(feed) < 0.1
    assert feed_actors("unstarted") == {}


def test_sync_face_start_get_stop(probe: Any) -> None:
    feed = _feed("sync", fetchers.Blocking(probe, index=1))
    feed.start()
    batch = feed.get(timeout=30)
    assert batch.rows == 8
    start = time.monotonic()
    feed.stop(timeout=TIMEOUT)
    assert time.monotonic() - start <= BOUND
    _nothing_left("sync")


async def test_object_store_use_stays_bounded_under_a_slow_consumer() -> None:
    rows, nbytes = 8, 64 * 1024  # a chunk of 512 KiB is a whole batch: passed on as it is
    keys = 64  # 32 MiB in all
    concurrency = 8
    feed = af.Feed.from_keys(
        range(keys),
        fetchers.Big(nbytes, rows),
        blobs=["ids", "data"],
        batch_size=rows,
        concurrency=concurrency,
        source="slow",
        workers=af.RayActors(2, resources={FETCH: 0.01}),
        log_interval=None,
    )
    pinned = queued = 0
    ids: list[int] = []
    spilled = store_stats()[2]
    async with feed:
        async for batch in feed:
            ids += batch["ids"][:1].tolist()
            data = batch["data"]
            assert np.all(data == (batch["ids"] % 251)[:, None])
            # the feed's rows are its own copies, never views of Ray's object store
            assert data.flags.writeable and isinstance(array_root(data), np.ndarray)
            pinned = max(pinned, store_stats()[1])
            queued = max(queued, feed.stats().chunk_queue_depth)
            await asyncio.sleep(0.02)  # the consumer's own work: slower than the fetchers
    assert sorted(ids) == list(range(keys))
    assert queued >= 16  # the fetchers ran well ahead of the consumer
    # pinned by the feed's references: the results of the calls in flight, <= concurrency
    assert 0 < pinned <= concurrency * rows * nbytes + 2**16, pinned
    assert store_stats()[2] == spilled  # nothing was ever pushed out to disk
    _nothing_left("slow")
