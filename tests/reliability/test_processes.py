"""Process executors whose workers die: BrokenProcessPool surfaces as FetchError, the feed
stops cleanly, and a skip budget does not spin on an executor that can never recover."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import resource_tracker as resource_tracker_module

import pytest

import asyncfeed as af
from tests.reliability import proc_fetchers
from tests.reliability.faults import Tracker, assert_clean_end, timed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

BLOBS = ["ids", "x", "pid"]


@pytest.fixture(autouse=True, scope="module")
def resource_tracker() -> None:
    """multiprocessing's resource tracker: one per interpreter, started before the fd checks."""
    resource_tracker_module.ensure_running()


@pytest.fixture
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield executor
    finally:
        if executor._broken:
            # CPython 3.11: a worker spawned on demand while the pool breaks is missed by
            # terminate_broken(), which then joins it forever (and so would shutdown() and
            # interpreter exit). The pool is dead: kill what is left of it.
            for proc in list(executor._processes.values()):
                proc.kill()
        executor.shutdown()


@pytest.mark.parametrize("max_errors", [None, 10**9])
async def test_a_killed_worker_process_stops_the_feed_with_fetch_error(
    pool: ProcessPoolExecutor, max_errors: int | None
) -> None:
    feed = af.Feed(
        proc_fetchers.pid_rows,
        blobs=BLOBS,
        batch_size=8,
        concurrency=2,
        executor=pool,
        max_errors=max_errors,
    )
    tracker = Tracker(8)
    with pytest.raises(af.FetchError, match="BrokenProcessPool") as info:
        async with feed:
            async for batch in feed:
                tracker.add(batch)
                if tracker.batches == 20:
                    os.kill(int(batch["pid"][0]), signal.SIGKILL)
                    killed = time.monotonic()
    assert time.monotonic() - killed < 2.0  # no spinning through the skip budget
    assert info.value.worker_id in feed.worker_ids
    assert isinstance(info.value.__cause__, af.FetchError | RuntimeError)
    stats = assert_clean_end(feed, tracker, causes={"error", "abandoned"})
    assert stats.fetch_errors <= 2 * 2  # each worker fails at most once per broken call


async def test_a_worker_that_dies_inside_a_call_is_named(pool: ProcessPoolExecutor) -> None:
    feed = af.Feed(
        functools.partial(proc_fetchers.crash_at, 3),
        blobs=["x"],
        batch_size=4,
        concurrency=1,
        executor=pool,
    )
    with pytest.raises(
        af.FetchError, match=r"^fetch failed in worker \d+: BrokenProcessPool: "
    ) as info:
        async with feed:
            async for _ in feed:
                pass
    assert info.value.worker_id == feed.worker_ids[0]
    assert_clean_end(feed, causes={"error"})


async def test_an_executor_shut_down_under_the_feed_stops_it(pool: ProcessPoolExecutor) -> None:
    feed = af.Feed(
        proc_fetchers.pid_rows, blobs=BLOBS, batch_size=8, executor=pool, max_errors=10**9
    )
    tracker = Tracker(8)
    with pytest.raises(af.FetchError, match="shutdown") as info:
        async with feed:
            async for batch in feed:
                tracker.add(batch)
                if tracker.batches == 5:
                    pool.shutdown()  # the owner closes it while the feed runs
                    with timed():
                        async for batch in feed:
                            tracker.add(batch)
    assert info.value.worker_id in feed.worker_ids
    assert_clean_end(feed, tracker, causes={"error", "abandoned"})
