"""HttpFetcher with adaptive host limits against real throttling services on 127.0.0.1.

Convergence is asserted on counts and limits, never on speed.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

import asyncfeed as af
from tests.httpserver import FaultServer

pytestmark = pytest.mark.timeout(60)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` (checked every few ms), failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


def test_adaptive_argument_is_validated() -> None:
    with pytest.raises(
        af.ConfigError, match=r"^adaptive must be None, a bool or an Adaptive, got 'yes'$"
    ):
        af.HttpFetcher(adaptive="yes")  # type: ignore[arg-type]
    with pytest.raises(af.ConfigError, match=r"^adaptive must be None or an Adaptive, got 3$"):
        af.HttpFetcher().use_adaptive(3)  # type: ignore[arg-type]


async def test_adaptive_follows_the_argument_the_feed_or_use_adaptive() -> None:
    feed: Any = SimpleNamespace(options=SimpleNamespace(concurrency=af.Adaptive(max=8)))
    followed = af.HttpFetcher()
    await followed.open(feed)
    try:
        assert followed.adaptive == af.Adaptive(max=8)
        assert followed.session is not None and followed.session.connector is not None
        assert followed.session.connector.limit == 8
    finally:
        await followed.aclose()
    never = af.HttpFetcher(adaptive=False)
    await never.open(feed)
    assert never.adaptive is None
    await never.aclose()
    fixed: Any = SimpleNamespace(options=SimpleNamespace(concurrency=32))
    own = af.HttpFetcher(adaptive=af.Adaptive(max=4))
    await own.open(fixed)
    assert own.adaptive == af.Adaptive(max=4)
    await own.aclose()
    lazy = af.HttpFetcher()  # a worker process opens it without the feed
    lazy.use_adaptive(af.Adaptive(max=16))
    async with lazy:
        assert lazy.adaptive == af.Adaptive(max=16)
    async with af.HttpFetcher(adaptive=True) as on:
        assert on.adaptive == af.Adaptive()
    async with af.HttpFetcher() as off:
        assert off.adaptive is None


async def test_requests_held_by_a_pause_spend_neither_attempts_nor_the_deadline(
    fault_server: FaultServer,
) -> None:
    fault_server.plan("/png/0", ("status", 429, {"Retry-After": "1"}))
    retry = af.Retry(attempts=2, deadline=0.5)  # the pause alone is longer than the deadline
    fetcher = af.HttpFetcher(retry=retry, adaptive=True, decode_threads=1)
    async with fetcher:
        first = asyncio.create_task(fetcher(fault_server.url("/png/0")))
        await until(lambda: fetcher.load()["throttled"] == 1)  # refused, held by the pause
        assert fault_server.hits["/png/0"] == 1
        others = [asyncio.create_task(fetcher(fault_server.url(f"/png/{i}"))) for i in (1, 2, 3)]
        await until(lambda: fetcher.load()["throttled"] == 4)
        assert sum(fault_server.hits[f"/png/{i}"] for i in (1, 2, 3)) == 0  # not sent yet
        chunks = await asyncio.wait_for(asyncio.gather(first, *others), 20)
        assert len(chunks) == 4 and fetcher.load()["throttled"] == 0
        (host,) = fetcher.host_stats().values()
    after = fetcher.host_stats()[f"127.0.0.1:{fault_server.port}"]  # closed: still learned
    assert after["limit"] == host["limit"] and after["inflight"] == 0
    assert [fault_server.hits[f"/png/{i}"] for i in range(4)] == [2, 1, 1, 1]
    assert host["retries_by_reason"] == {"http_429": 1} and host["status"]["4xx"] == 1
    assert host["held"] == 0 and host["held_s"] >= 3 * 0.5  # each held about a second
    assert host["limit"] >= 1 and "rate_limit" in host


async def test_without_adaptive_the_same_pause_ends_the_retries(fault_server: FaultServer) -> None:
    fault_server.plan("/png/0", ("status", 429, {"Retry-After": "1"}))
    fetcher = af.HttpFetcher(retry=af.Retry(attempts=2, deadline=0.5), decode_threads=1)
    async with fetcher:
        with pytest.raises(af.HttpError, match=r"Retry-After 1 s ends past the retry deadline"):
            await fetcher(fault_server.url("/png/0"))
        assert "limit" not in fetcher.host_stats()[f"127.0.0.1:{fault_server.port}"]


async def run_feed(
    service: af.ImageService,
    keys: int,
    fetcher: af.HttpFetcher,
    concurrency: int | af.Adaptive = 128,
) -> list[Any]:
    """Every key through a feed of a large fixed concurrency, or an adaptive one (the
    fetcher follows it); host stats at each batch."""
    feed = af.Feed.from_keys(
        service.urls(keys),
        fetcher,
        blobs=["data"],
        batch_size=16,
        concurrency=concurrency,
        log_interval=None,
        max_errors=0,
    )
    seen: list[Any] = []
    async with feed:
        async for batch in feed:
            (host,) = feed.stats().hosts.values()
            seen.append((batch.rows, host))
    stats = feed.stats()
    assert stats.rows_delivered == keys and stats.fetch_errors == 0  # every key, none skipped
    return seen


@pytest.mark.parametrize("concurrency", [128, af.Adaptive(max=128)], ids=["fixed", "adaptive"])
async def test_limit_settles_near_a_concurrency_limited_service(
    concurrency: int | af.Adaptive,
) -> None:
    k = 8
    service = af.ImageService(count=32, size=16, fmt="png", latency_ms=25, max_concurrent=k)
    async with service:
        adaptive = None if isinstance(concurrency, af.Adaptive) else True  # None: the feed's
        fetcher = af.HttpFetcher(adaptive=adaptive, decode_threads=2)
        seen = await run_feed(service, 1200, fetcher, concurrency)
        assert service.peak_in_flight <= k
    half = len(seen) // 2  # converged: the second half of the batches
    limits = [host["limit"] for _, host in seen[half:]]
    assert 0.75 * k <= statistics.median(limits) <= 1.25 * k
    mid, end = seen[half][1], seen[-1][1]
    requests = end["requests"] - mid["requests"]
    refused = end["status"]["4xx"] - mid["status"]["4xx"]
    assert refused / requests < 0.02
    assert end["status"]["4xx"] == service.throttled  # every refusal seen and counted


@pytest.mark.parametrize("concurrency", [64, af.Adaptive(max=64)], ids=["fixed", "adaptive"])
async def test_every_key_arrives_from_a_rate_limited_fast_service(
    concurrency: int | af.Adaptive,
) -> None:
    service = af.ImageService(count=32, size=16, fmt="png", max_rate=150)
    async with service:
        adaptive = None if isinstance(concurrency, af.Adaptive) else True
        fetcher = af.HttpFetcher(adaptive=adaptive, decode_threads=2)
        seen = await run_feed(service, 1000, fetcher, concurrency)
    end = seen[-1][1]
    assert end["status"]["4xx"] == service.throttled
    assert service.throttled / end["requests"] < 0.10
    assert end["status"]["2xx"] == 1000  # one good answer per key
    assert end["rate_limit"] < 1000 and end["rate_limit_reason"] in ("throttled", "probing")
