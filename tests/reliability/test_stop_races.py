"""stop() racing everything: other stoppers, start-up, init_fun, a failing fetcher, a flush."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
import asyncfeed.run as run_module
from tests.reliability.faults import (
    CounterSource,
    FaultyFetcher,
    Injected,
    Tracker,
    assert_clean_end,
    consume_sync,
    join_threads,
    timed,
)

pytestmark = pytest.mark.timeout(30)


def run_threads(n: int, target: Any) -> list[BaseException | None]:
    """Run ``target()`` on ``n`` threads released together; return what each raised."""
    barrier = threading.Barrier(n)
    outcome: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            target()
        except BaseException as exc:
            outcome[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    return outcome


def test_stop_from_eight_threads_while_consumers_wait_in_get(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=4)
    tracker = Tracker(8)
    feed.start()
    consume_sync(feed, tracker, 400)
    getters: list[BaseException] = []

    def getter() -> None:
        try:
            while True:
                tracker.add(feed.get(timeout=10))
        except af.AsyncFeedError as exc:
            getters.append(exc)

    threads = [threading.Thread(target=getter) for _ in range(2)]
    for t in threads:
        t.start()
    with timed():
        outcome = run_threads(8, feed.stop)
    for t in threads:
        t.join(5)
    assert outcome == [None] * 8
    # parked in get() or calling it once the feed (and maybe its loop thread) is gone
    assert [type(e) for e in getters] == [af.FeedExhausted] * 2
    join_threads("asyncfeed-train-fetch")
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


@pytest.mark.parametrize("attempt", range(5))
def test_getters_racing_the_last_stop_always_get_an_answer(attempt: int) -> None:
    """A get() whose request reaches the loop thread as it closes is answered all the same.

    The last feed's stop closes the shared loop thread; a request queued on the loop after its
    final iteration would never run, and its getter would wait out its whole timeout.
    """

    def getter(feed: af.Feed, tracker: Tracker, ends: list[BaseException]) -> None:
        try:
            while True:
                tracker.add(feed.get(timeout=10))
        except BaseException as exc:
            ends.append(exc)

    for _ in range(10):
        counter = CounterSource()

        async def fetch(worker_id: int, batch_size: int, counter: CounterSource = counter) -> Any:
            await asyncio.sleep(0)
            return counter.chunk(2)

        feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=2)
        tracker = Tracker(4)
        feed.start()
        consume_sync(feed, tracker, 40)
        ends: list[BaseException] = []
        getters = [threading.Thread(target=getter, args=(feed, tracker, ends)) for _ in range(3)]
        for t in getters:
            t.start()
        with timed():
            feed.stop()
            for t in getters:
                t.join(5)
        assert [type(e) for e in ends] == [af.FeedExhausted] * 3
        assert_clean_end(feed, tracker, causes={"stop"}, issued=counter.issued)


@pytest.mark.parametrize("attempt", range(10))
def test_a_fetch_error_racing_stop_is_raised_exactly_once_or_never_happens(
    counter: CounterSource, flavour: str, attempt: int
) -> None:
    faulty = FaultyFetcher(counter, at={0: "raise"})
    feed = af.Feed(faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=1)
    feed.start()
    outcome = run_threads(4, feed.stop)
    join_threads("asyncfeed-train-fetch")
    raised = [e for e in outcome if e is not None]
    # a sync fetcher's thread may be in its next call already: that call is abandoned
    stats = assert_clean_end(feed, causes=set() if flavour == "async" else {"abandoned", "error"})
    assert len(raised) == stats.fetch_errors  # seen once, by one stopper, or never failed
    assert all(isinstance(e, af.FetchError) and isinstance(e.__cause__, Injected) for e in raised)
    feed.stop()  # and a later stop is quiet


def test_stop_during_start_up_stops_the_feed(
    monkeypatch: pytest.MonkeyPatch, counter: CounterSource
) -> None:
    """stop() from another thread while start() is inside the feed's start-up on its loop."""
    in_start_up = threading.Event()
    stop_progressed = threading.Event()  # stop() returned, or handed its work to the loop
    real_attach = run_module.attach_source  # type: ignore[attr-defined]
    real_submit = asyncio.run_coroutine_threadsafe

    def slow_attach(*args: Any, **kwargs: Any) -> Any:
        in_start_up.set()
        assert stop_progressed.wait(5)
        return real_attach(*args, **kwargs)

    def submit(coro: Any, loop: asyncio.AbstractEventLoop) -> Any:
        if getattr(coro, "__qualname__", "").endswith(("aclose", "_aclose_by")):
            stop_progressed.set()
        return real_submit(coro, loop)

    monkeypatch.setattr(run_module, "attach_source", slow_attach)
    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", submit)

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(2)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4)
    starter = threading.Thread(target=feed.start)
    starter.start()
    assert in_start_up.wait(5)

    def stop() -> None:
        feed.stop()
        stop_progressed.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    starter.join(5)
    stopper.join(5)
    assert feed.state is af.FeedState.STOPPED
    assert not any(t.name == "asyncfeed-loop" for t in threading.enumerate())
    assert_clean_end(feed)


@pytest.mark.parametrize("attempt", range(10))
def test_start_and_stop_from_two_threads_at_once(counter: CounterSource, attempt: int) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(2)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def starter() -> None:
        barrier.wait()
        try:
            feed.start()
        except af.FeedStateError as exc:  # stop() won: the feed never ran
            errors.append(exc)

    def stopper() -> None:
        barrier.wait()
        feed.stop()

    threads = [threading.Thread(target=starter), threading.Thread(target=stopper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    feed.stop()  # whoever won, a stop after both returned leaves nothing running
    assert feed.state is af.FeedState.STOPPED
    assert all("this one is stopped" in str(e) for e in errors)
    assert_clean_end(feed)
