"""Lifecycle: stop from every state, promptly, leaving no task or thread behind."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import asyncfeed as af
from tests.conftest import CounterSource, check_accounting

STOP_BOUND_S = 2.0


def assert_quick(start: float) -> None:
    assert time.monotonic() - start < STOP_BOUND_S


async def test_stop_before_start_is_final() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    feed = af.Feed(fetch, blobs=["x"], batch_size=1)
    await feed.aclose()
    feed.stop()
    assert feed.state is af.FeedState.STOPPED
    with pytest.raises(af.FeedStateError, match=r"^a feed starts once; this one is stopped"):
        feed.start()
    with pytest.raises(af.FeedStateError, match="not started"):
        await anext(feed)


async def test_enter_twice_is_refused(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(1)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4)
    async with feed:
        with pytest.raises(af.FeedStateError, match="this one is running"):
            await feed.__aenter__()
    await feed.aclose()  # idempotent


async def test_stop_while_fetchers_blocked_on_full_queue(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(3)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=8, max_buffered_chunks=4)
    await feed.__aenter__()
    while feed.stats().chunk_queue_depth < 4 or feed.stats().batch_queue_depth < 2:
        await asyncio.sleep(0)
    start = time.monotonic()
    await feed.aclose()
    assert_quick(start)
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_in_flight == 0 and stats.rows_delivered == 0
    assert stats.dropped_by_cause["stop"] == stats.rows_fetched > 0


async def test_stop_while_consumer_waits_on_hung_async_fetchers() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        await asyncio.Event().wait()  # never returns

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, concurrency=4)
    await feed.__aenter__()
    consumer = asyncio.create_task(anext(feed))
    await asyncio.sleep(0)
    start = time.monotonic()
    await feed.aclose()
    assert_quick(start)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(consumer, 1)


def test_stop_abandons_a_sync_fetcher_stuck_in_a_thread() -> None:
    release = threading.Event()
    entered = threading.Event()

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        entered.set()
        release.wait(10)
        return [np.zeros(5)]

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, concurrency=1)
    feed.start()
    assert entered.wait(5)
    start = time.monotonic()
    feed.stop(timeout=1.0)
    assert_quick(start)
    assert feed.state is af.FeedState.STOPPED
    stuck = [t for t in threading.enumerate() if t.name.startswith("asyncfeed-train-fetch")]
    assert stuck, "the stuck fetcher's thread is abandoned, not killed"
    release.set()
    for t in stuck:
        t.join(5)
    stats = feed.stats()
    assert stats.dropped_by_cause.get("abandoned") == 5  # the late result, counted not delivered
    check_accounting(stats)


def test_stop_during_a_blocking_init_fun() -> None:
    release = threading.Event()
    entered = threading.Event()

    def init(feed: af.Feed) -> None:
        entered.set()
        release.wait(10)

    calls: list[int] = []

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        calls.append(worker_id)
        return [np.zeros(1)]

    feed = af.Feed(fetch, blobs=["x"], batch_size=4, init_fun=init)
    feed.start()
    assert entered.wait(5)
    start = time.monotonic()
    feed.stop()
    assert_quick(start)
    release.set()
    assert calls == []  # no fetcher started


def test_sync_consumer_waiting_in_get_is_released_by_stop() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        await asyncio.Event().wait()

    feed = af.Feed(fetch, blobs=["x"], batch_size=4)
    feed.start()
    outcome: list[BaseException] = []
    waiting = threading.Event()

    def consume() -> None:
        waiting.set()
        try:
            feed.get(timeout=10)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    assert waiting.wait(5)
    start = time.monotonic()
    feed.stop()
    thread.join(5)
    assert_quick(start)
    assert len(outcome) == 1 and isinstance(outcome[0], af.FeedExhausted)


def test_stop_from_several_threads_at_once(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(2)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=2)
    feed.start()
    feed.get(timeout=5)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def stopper() -> None:
        barrier.wait()
        try:
            feed.stop()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stopper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == [] and feed.state is af.FeedState.STOPPED
    check_accounting(feed.stats())


def test_sync_get_and_iteration(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(3)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2)
    with pytest.raises(af.FeedStateError, match="not started"):
        feed.get()
    feed.start()
    with pytest.raises(af.FeedStateError, match="starts once"):
        feed.start()
    seen: list[int] = []
    for batch in feed:
        assert batch.rows == 8
        seen += batch["ids"].tolist()
        if len(seen) >= 800:
            break
    feed.stop()
    assert len(set(seen)) == 800
    check_accounting(feed.stats())


def test_get_timeout_loses_nothing(counter: CounterSource) -> None:
    gate = threading.Semaphore(0)

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        gate.acquire(timeout=10)
        return counter.chunk(4)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=1)
    feed.start()
    with pytest.raises(af.FeedTimeoutError, match=r"^no batch within 0.2 s$"):
        feed.get(timeout=0.2)
    for _ in range(5):
        gate.release()
    got = [feed.get(timeout=5)["ids"].tolist() for _ in range(5)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]
    feed.stop()
    gate.release()  # frees the call that was waiting when the feed stopped


async def test_cancelling_the_orchestrator_task_stops_the_feed(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(2)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4)
    got_one = asyncio.Event()

    async def orchestrator() -> None:
        async with feed:
            async for _ in feed:
                got_one.set()
                await asyncio.Event().wait()  # stalls until cancelled

    task = asyncio.create_task(orchestrator())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert feed.state is af.FeedState.STOPPED
    check_accounting(feed.stats())
    assert feed.stats().rows_in_flight == 0


async def test_asyncio_timeout_around_the_feed(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        await asyncio.Event().wait()

    feed = af.Feed(fetch, blobs=["x"], batch_size=4)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2), feed:
            await anext(feed)
    assert feed.state is af.FeedState.STOPPED


def test_unclosed_feed_warns() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        await asyncio.Event().wait()

    async def leak() -> None:
        feed = af.Feed(fetch, blobs=["x"], batch_size=4)
        await feed.__aenter__()  # never closed: the loop's end cancels it

    with pytest.warns(ResourceWarning, match="unclosed <Feed"):
        asyncio.run(leak())
        gc.collect()


@pytest.mark.timeout(30)
def test_a_script_that_forgets_stop_still_exits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "forgets.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            import numpy as np
            import asyncfeed as af

            def fetch(worker_id, batch_size):
                threading.Event().wait()  # a fetcher stuck forever

            async def afetch(worker_id, batch_size):
                return [np.zeros(2)]

            af.Feed(fetch, blobs=["x"], batch_size=2).start()
            feed = af.Feed(afetch, blobs=["x"], batch_size=2)
            feed.start()
            print(feed.get(timeout=5).rows)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


async def test_stop_before_the_runner_first_runs_still_cleans_up() -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.zeros(1)]

    async with af.Feed(fetch, blobs=["x"], batch_size=4, source="early") as feed:
        pass  # closed before its runner task ever ran
    assert feed.state is af.FeedState.STOPPED
    with pytest.raises(StopAsyncIteration):
        await anext(feed)
    # the source was left: a new feed may use it with other blobs
    async with af.Feed(fetch, blobs=["y"], batch_size=4, source="early") as other:
        assert (await anext(other)).rows == 4


@pytest.mark.timeout(20)
def test_a_sync_with_block_starts_and_stops_the_feed(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8)
    with feed as running:
        assert running is feed and feed.state is af.FeedState.RUNNING
        assert feed.get(timeout=10).rows == 8
    assert feed.stats().state == "stopped"


@pytest.mark.timeout(20)
def test_get_after_stop_says_the_feed_was_stopped(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8)
    feed.start()
    feed.get(timeout=10)
    feed.stop()
    with pytest.raises(af.FeedExhausted, match=r"^feed 'train' was stopped$"):
        feed.get(timeout=1)
    assert list(feed) == []  # iteration ends quietly


@pytest.mark.timeout(20)
def test_get_after_the_last_batch_says_so() -> None:
    def fetch_one(key: int) -> list[np.ndarray]:
        return [np.array([key])]

    feed = af.Feed.from_keys(range(3), fetch_one, blobs=["x"], batch_size=2)
    with feed:
        assert [b.rows for b in feed] == [2, 1]
        with pytest.raises(af.FeedExhausted, match=r"^feed 'keys' delivered its last batch$"):
            feed.get(timeout=1)
