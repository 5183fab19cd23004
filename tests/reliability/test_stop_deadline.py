"""One deadline per stop: ``stop(timeout=T)`` and ``aclose(timeout=T)`` end within T + 0.25 s.

Whatever holds the feed up — sync calls that cannot be interrupted, worker processes that
ignore STOP and SIGTERM, a sink nobody reads — the stop is clean by its deadline. Only a
fetcher that blocks the feed's own event loop may end it with ``FeedTimeoutError``, and then
at T + 0.25 s, not later.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.bridge import to_thread
from tests import procs_fetchers as pf
from tests.procs_support import no_leaks, worker_processes
from tests.reliability.faults import CounterSource, join_threads

pytestmark = pytest.mark.timeout(60)

T = 1.0
BOUND = T + 0.25


def bounded(stop: Callable[[], Any]) -> float:
    """Run ``stop()`` and return how long it took."""
    start = time.monotonic()
    stop()
    return time.monotonic() - start


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, on a condition of the feed, not on time."""
    event = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        event.wait(0.005)


@pytest.mark.parametrize("api", ["stop", "aclose"])
async def test_sync_fetchers_stuck_in_calls_do_not_delay_the_stop(
    counter: CounterSource, api: str
) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def stuck(worker_id: int, batch_size: int) -> list[np.ndarray]:
        entered.release()
        release.wait(30)  # cannot be interrupted: abandoned at stop
        return counter.chunk(2)

    feed = af.Feed(stuck, blobs=counter.blobs, batch_size=4, concurrency=4)
    try:
        if api == "stop":
            await to_thread(feed.start, name="test-start")
        else:
            await feed.__aenter__()
        for _ in range(4):
            assert await to_thread(entered.acquire, True, 10, name="test-wait")
        if api == "stop":
            took = await to_thread(bounded, lambda: feed.stop(timeout=T), name="test-stop")
        else:
            start = time.monotonic()
            await feed.aclose(timeout=T)
            took = time.monotonic() - start
    finally:
        release.set()
    assert took <= BOUND, f"{took:.2f} s"
    assert feed.state is af.FeedState.STOPPED
    await to_thread(join_threads, "asyncfeed-train-fetch", name="test-join")


@pytest.mark.parametrize("api", ["stop", "aclose"])
async def test_worker_processes_that_ignore_stop_and_sigterm_are_killed_in_time(
    api: str,
) -> None:
    """Their event loops are blocked (STOP is never read) and SIGTERM is ignored."""
    feed = af.Feed(
        pf.block_loop,
        blobs=["ids", "x", "pid"],
        batch_size=1,
        concurrency=2,
        workers=af.Processes(2, start_method="fork", worker_init=pf.ignore_sigterm),
    )
    with no_leaks():
        if api == "stop":
            await to_thread(feed.start, name="test-start")
            seen: set[int] = set()
            while len(seen) < 2:  # each worker answered once; now its loop is blocked
                batch = await to_thread(functools.partial(feed.get, timeout=30), name="test-get")
                seen |= set(batch["pid"].tolist())
            took = await to_thread(bounded, lambda: feed.stop(timeout=T), name="test-stop")
        else:
            await feed.__aenter__()
            seen = set()
            while len(seen) < 2:
                seen |= set((await anext(feed))["pid"].tolist())
            start = time.monotonic()
            await feed.aclose(timeout=T)  # clean: no FeedTimeoutError
            took = time.monotonic() - start
    assert took <= BOUND, f"{took:.2f} s"
    assert feed.state is af.FeedState.STOPPED and worker_processes() == []


async def test_a_sink_whose_reader_is_gone_does_not_delay_the_stop(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(4)

    sink = af.BlobsQueue(capacity=1, num_blobs=2)  # nobody reads it: put() blocks
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, sink=sink)
    await to_thread(feed.start, name="test-start")
    await to_thread(wait_for, lambda: feed.stats().rows_handing > 0, name="test-wait")
    took = await to_thread(bounded, lambda: feed.stop(timeout=T), name="test-stop")
    assert took <= BOUND, f"{took:.2f} s"
    assert feed.state is af.FeedState.STOPPED and sink.closed


def test_a_fetcher_blocking_the_event_loop_ends_the_stop_with_a_timeout_in_time() -> None:
    entered = threading.Event()
    release = threading.Event()

    async def blocks_the_loop(worker_id: int, batch_size: int) -> None:
        entered.set()
        release.wait(30)  # a sync wait inside async def: the whole loop stops

    feed = af.Feed(blocks_the_loop, blobs=["x"], batch_size=4, concurrency=1)
    feed.start()
    try:
        assert entered.wait(10)
        start = time.monotonic()
        with pytest.raises(af.FeedTimeoutError, match=r"did not stop within 1 s"):
            feed.stop(timeout=T)
        took = time.monotonic() - start
    finally:
        release.set()
    assert took <= BOUND, f"{took:.2f} s"
    feed.stop(timeout=10)  # once the loop runs again, the stop completes
    assert feed.state is af.FeedState.STOPPED


@pytest.mark.parametrize("state", ["new", "running", "stopping", "stopped"])
def test_stop_from_every_state_keeps_its_deadline(counter: CounterSource, state: str) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(3)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=2)
    if state != "new":
        feed.start()
        assert feed.get(timeout=10).rows == 4
    if state == "stopped":
        feed.stop(timeout=T)
    others: list[threading.Thread] = []
    if state == "stopping":  # another thread's stop is under way
        others = [threading.Thread(target=feed.stop, kwargs={"timeout": T})]
        others[0].start()
    took = bounded(lambda: feed.stop(timeout=T))
    for thread in others:
        thread.join(10)
    assert took <= BOUND, f"{took:.2f} s"
    assert feed.state is af.FeedState.STOPPED
