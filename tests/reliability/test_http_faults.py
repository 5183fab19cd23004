"""HttpFetcher against the fault switchboard: random 500/503/429, resets and truncation
mid-body, requests never answered, corrupt, bomb and oversized images, and the server
killed and restarted mid-run. Every image arrives once and intact, or its failure is
counted (within the budget) or raised, naming the URL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.fetchers.service import synthetic_image
from tests.reliability.faults import assert_clean_end, timed
from tests.reliability.switchboard import SIZE, Switchboard

pytestmark = pytest.mark.timeout(30)

FAST = af.Retry(attempts=8, backoff=0.002, max_delay=0.02, jitter=0.5)
SHORT = aiohttp.ClientTimeout(total=None, connect=1.0, sock_read=0.25)


@pytest.fixture
async def board() -> AsyncIterator[Switchboard]:
    server = Switchboard(seed=6)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


def keyed_feed(board: Switchboard, keys: range, fetcher: af.HttpFetcher, **kw: object) -> af.Feed:
    return af.Feed.from_keys(
        [(board.url(i), i) for i in keys],
        fetcher,
        blobs=["data", "label"],
        batch_size=kw.pop("batch_size", 8),  # type: ignore[arg-type]
        concurrency=kw.pop("concurrency", 16),  # type: ignore[arg-type]
        log_interval=None,
        **kw,  # type: ignore[arg-type]
    )


def check_images(batch: af.Batch, seen: set[int]) -> None:
    """Every row's pixels are its label's image; every label arrives once."""
    for image, label in zip(batch["data"], batch["label"], strict=True):
        assert np.array_equal(image, synthetic_image(int(label), SIZE)), int(label)
        assert int(label) not in seen, f"image {int(label)} delivered twice"
        seen.add(int(label))


async def drain(feed: af.Feed, seen: set[int]) -> None:
    async with feed:
        async for batch in feed:
            check_images(batch, seen)


async def test_random_transient_faults_are_retried_and_every_image_arrives_once(
    board: Switchboard,
) -> None:
    board.rates = {"500": 0.04, "503": 0.04, "429": 0.04, "reset": 0.04, "truncated": 0.04}
    board.rates["hang"] = 0.01
    fetcher = af.HttpFetcher(retry=FAST, timeout=SHORT)
    feed = keyed_feed(board, range(240), fetcher)
    seen: set[int] = set()
    await drain(feed, seen)
    assert seen == set(range(240))
    assert all(board.injected[k] > 0 for k in ("500", "503", "429", "reset", "truncated"))
    stats = assert_clean_end(feed, causes=set(), issued=240)
    (host,) = stats.hosts.values()
    assert host["retries"] >= sum(board.injected[k] for k in board.rates) - 16
    assert fetcher.session is None  # the feed closed the session it opened


async def test_permanent_faults_within_the_budget_are_counted_and_named(
    board: Switchboard, caplog: pytest.LogCaptureFixture
) -> None:
    board.permanent = {7: "corrupt", 19: "bomb", 31: "oversized", 44: "corrupt"}
    board.rates = {"503": 0.05, "reset": 0.05}
    fetcher = af.HttpFetcher(retry=FAST, timeout=SHORT, max_bytes=128 << 10)
    feed = keyed_feed(board, range(60), fetcher, max_errors=4)
    seen: set[int] = set()
    await drain(feed, seen)
    assert seen == set(range(60)) - set(board.permanent)
    stats = assert_clean_end(feed, causes=set(), issued=56)
    assert stats.fetch_errors == 4
    skipped = "\n".join(r.getMessage() for r in caplog.records if "skipping" in r.getMessage())
    for i in board.permanent:
        assert board.url(i) in skipped, i
    assert "max_pixels" in skipped and "max_bytes" in skipped
    assert all(board.served[i] == 0 for i in board.permanent)


@pytest.mark.parametrize(
    ("fault", "error", "pattern"),
    [
        ("corrupt", af.DecodeError, r"cannot decode {url}"),
        ("bomb", af.DecodeError, r"{url}.*max_pixels"),
        ("oversized", af.HttpError, r"GET {url} failed after 1 attempt: .*max_bytes"),
    ],
)
async def test_a_permanent_fault_stops_the_feed_with_an_error_naming_the_url(
    board: Switchboard, fault: str, error: type[Exception], pattern: str
) -> None:
    board.permanent = {5: fault}
    fetcher = af.HttpFetcher(retry=FAST, max_bytes=128 << 10)
    feed = keyed_feed(board, range(10), fetcher, ordered=True, concurrency=1, batch_size=2)
    seen: set[int] = set()
    with pytest.raises(error, match=pattern.format(url=re.escape(board.url(5)))) as info:
        await drain(feed, seen)
    assert isinstance(info.value, af.FetchError) and info.value.key == (board.url(5), 5)
    assert seen <= set(range(5))
    assert_clean_end(feed, causes={"error"})


async def test_retries_run_out_on_a_server_that_always_fails(board: Switchboard) -> None:
    board.rates = {"500": 0.5, "truncated": 0.5}
    fetcher = af.HttpFetcher(retry=af.Retry(attempts=3, backoff=0.001), timeout=SHORT)
    feed = keyed_feed(board, range(4), fetcher, concurrency=1)
    with pytest.raises(af.HttpError, match=r"failed after 3 attempts") as info:
        await drain(feed, set())
    assert info.value.attempts == 3 and info.value.url.startswith(board.url(0)[:-1])
    assert_clean_end(feed, causes={"error"})


async def test_stop_while_every_request_is_accepted_and_never_answered(
    board: Switchboard,
) -> None:
    board.rates = {"hang": 1.0}
    fetcher = af.HttpFetcher(retry=FAST)  # default timeouts: nothing times out in this test
    feed = keyed_feed(board, range(100), fetcher)
    await feed.__aenter__()
    waiting = asyncio.create_task(anext(feed))
    await board.hanging.wait()
    with timed():
        await feed.aclose()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert fetcher.session is None and not fetcher.is_open
    assert_clean_end(feed, causes=set())  # no row was ever fetched; the fd check runs after


async def test_the_server_killed_and_restarted_mid_run(board: Switchboard) -> None:
    patient = af.Retry(attempts=60, backoff=0.005, max_delay=0.02, jitter=0.5)
    fetcher = af.HttpFetcher(retry=patient, timeout=SHORT)
    feed = keyed_feed(board, range(300), fetcher)
    seen: set[int] = set()
    async with feed:
        async for batch in feed:
            check_images(batch, seen)
            if len(seen) == 96:
                await board.kill()
                while _connection_errors(fetcher) < 8:  # the fetchers see it down, and retry
                    await asyncio.sleep(0)
                await board.restart()
    assert seen == set(range(300))
    stats = assert_clean_end(feed, causes=set(), issued=300)
    (host,) = stats.hosts.values()
    assert host["retries"] >= 8


def _connection_errors(fetcher: af.HttpFetcher) -> int:
    hosts = fetcher.host_stats()
    return sum(int(h["errors"].get("connection", 0)) for h in hosts.values())


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_server_down_for_5_s_costs_nothing_with_default_settings(
    board: Switchboard,
) -> None:
    """Every setting at its default (retry, timeouts, concurrency, no max_errors): a restart
    of several seconds delays the feed and loses nothing."""
    fetcher = af.HttpFetcher()
    feed = af.Feed.from_keys(
        [(board.url(i), i) for i in range(400)], fetcher, blobs=["data", "label"], batch_size=8
    )
    seen: set[int] = set()
    async with feed:
        async for batch in feed:
            check_images(batch, seen)
            if len(seen) == 96:
                await board.kill()
                while _connection_errors(fetcher) < 8:  # the fetchers see it down, and retry
                    await asyncio.sleep(0)
                await asyncio.sleep(5.0)  # the outage under test, not synchronisation
                await board.restart()
    assert seen == set(range(400))
    stats = assert_clean_end(feed, causes=set(), issued=400)
    (host,) = stats.hosts.values()
    assert host["retries"] >= 8 and stats.fetch_errors == 0
