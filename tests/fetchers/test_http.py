"""HttpFetcher against a real aiohttp server: content, retries, limits, lifecycle."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.fetchers.service import synthetic_image
from tests.conftest import check_accounting
from tests.httpserver import JPG_SIZE, PNG_SIZE, FaultServer

pytestmark = pytest.mark.timeout(20)

FAST = af.Retry(attempts=3, backoff=0.001, jitter=0.0)


async def collect(
    keys: Any, fetcher: af.HttpFetcher, blobs: tuple[str, ...] = ("data",), **kw: Any
) -> tuple[list[af.Batch], af.Feed]:
    feed = af.Feed.from_keys(keys, fetcher, blobs=blobs, log_interval=None, **kw)
    batches = []
    async with feed:
        async for batch in feed:
            batches.append(batch)
    return batches, feed


async def fail_with(url: str, fetcher: af.HttpFetcher) -> af.FetchError:
    with pytest.raises(af.FetchError) as info:
        await collect([url], fetcher, batch_size=1)
    return info.value


async def test_png_content_is_pixel_exact_and_labels_follow_keys(fault_server: FaultServer) -> None:
    keys = [(fault_server.url(f"/png/{i}"), i * 10) for i in range(20)]
    batches, feed = await collect(
        keys, af.HttpFetcher(retry=FAST), ("data", "label"), batch_size=8, ordered=True
    )
    assert [b.rows for b in batches] == [8, 8, 4]
    data = np.concatenate([b["data"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert data.dtype == np.uint8 and data.shape == (20, PNG_SIZE, PNG_SIZE, 3)
    for i in range(20):
        assert np.array_equal(data[i], synthetic_image(i, PNG_SIZE))
    assert labels.tolist() == [i * 10 for i in range(20)]
    check_accounting(feed.stats())


async def test_jpeg_content_is_within_tolerance(fault_server: FaultServer) -> None:
    urls = [fault_server.url(f"/jpg/{i}") for i in range(6)]
    batches, _ = await collect(urls, af.HttpFetcher(), batch_size=6, ordered=True)
    data = batches[0]["data"]
    assert data.shape == (6, JPG_SIZE, JPG_SIZE, 3)
    for i in range(6):
        diff = np.abs(data[i].astype(np.int16) - synthetic_image(i, JPG_SIZE))
        assert diff.mean() < 4.0, diff.mean()


async def test_resize_makes_mixed_sizes_batch_together(fault_server: FaultServer) -> None:
    urls = [fault_server.url("/png/1"), fault_server.url("/jpg/2")]  # 32x32 and 64x64
    fetcher = af.HttpFetcher(image=af.ImageOptions(size=(24, 40), channels=1))
    batches, _ = await collect(urls, fetcher, batch_size=2)
    assert batches[0]["data"].shape == (2, 24, 40, 1)


@pytest.mark.parametrize("statuses", [(500,), (503,), (500, 503)])
async def test_5xx_is_retried_until_success(
    fault_server: FaultServer, statuses: tuple[int]
) -> None:
    fault_server.plan("/png/3", *[("status", s) for s in statuses])
    fetcher = af.HttpFetcher(retry=FAST)
    batches, feed = await collect([fault_server.url("/png/3")], fetcher, batch_size=1)
    assert np.array_equal(batches[0]["data"][0], synthetic_image(3, PNG_SIZE))
    assert fault_server.hits["/png/3"] == len(statuses) + 1
    (host,) = feed.stats().hosts.values()
    assert host["retries"] == len(statuses)
    assert host["requests"] == len(statuses) + 1
    assert sum(host["errors"].values()) == len(statuses)
    assert set(host["errors"]) == {f"http_{s}" for s in statuses}


async def test_429_waits_as_long_as_retry_after_says(fault_server: FaultServer) -> None:
    fault_server.plan("/png/4", ("status", 429, {"Retry-After": "1"}))
    batches, _ = await collect(
        [fault_server.url("/png/4")], af.HttpFetcher(retry=FAST), batch_size=1
    )
    assert batches[0].rows == 1
    first, second = fault_server.times["/png/4"]
    assert second - first >= 0.95  # the backoff alone would be 1 ms


async def test_404_is_not_retried(fault_server: FaultServer) -> None:
    url = fault_server.url("/status/404")
    err = await fail_with(url, af.HttpFetcher(retry=FAST))
    assert isinstance(err, af.HttpError)
    assert (err.url, err.status, err.attempts, err.kind) == (url, 404, 1, "status")
    assert str(err) == f"GET {url} failed after 1 attempt: HTTP 404 Not Found"
    assert fault_server.hits["/status/404"] == 1


async def test_attempts_are_bounded(fault_server: FaultServer) -> None:
    url = fault_server.url("/status/503")
    err = await fail_with(url, af.HttpFetcher(retry=FAST))
    assert isinstance(err, af.HttpError) and err.attempts == 3 and err.status == 503
    assert "after 3 attempts: HTTP 503 Service Unavailable" in str(err)
    assert fault_server.hits["/status/503"] == 3


async def test_read_timeout_is_retried_then_reported(fault_server: FaultServer) -> None:
    timeout = aiohttp.ClientTimeout(total=5, sock_read=0.2)
    url = fault_server.url("/slow")
    err = await fail_with(url, af.HttpFetcher(timeout=timeout, retry=af.Retry(2, backoff=0)))
    assert isinstance(err, af.HttpError)
    assert (err.status, err.attempts, err.kind) == (None, 2, "timeout")
    assert f"GET {url} failed after 2 attempts: no response (status none), timed out" in str(err)
    assert isinstance(err.__cause__, TimeoutError)
    assert fault_server.hits["/slow"] == 2


async def test_connection_reset_mid_body_is_retried(fault_server: FaultServer) -> None:
    fault_server.plan("/png/5", ("reset",))
    fetcher = af.HttpFetcher(retry=FAST)
    batches, feed = await collect([fault_server.url("/png/5")], fetcher, batch_size=1)
    assert np.array_equal(batches[0]["data"][0], synthetic_image(5, PNG_SIZE))
    (host,) = feed.stats().hosts.values()
    assert host["errors"] == {"connection": 1} and host["retries"] == 1


async def test_connection_reset_every_time_fails_with_the_attempt_count(
    fault_server: FaultServer,
) -> None:
    err = await fail_with(fault_server.url("/reset"), af.HttpFetcher(retry=FAST))
    assert isinstance(err, af.HttpError)
    assert (err.kind, err.attempts, err.status) == ("connection", 3, None)
    assert isinstance(err.__cause__, aiohttp.ClientPayloadError)


async def test_streamed_body_over_the_limit_stops_early(fault_server: FaultServer) -> None:
    fetcher = af.HttpFetcher(max_bytes=1 << 20, retry=FAST)
    err = await fail_with(fault_server.url("/huge"), fetcher)
    assert isinstance(err, af.HttpError) and err.kind == "too_large" and err.attempts == 1
    assert "larger than max_bytes=1,048,576" in str(err)
    assert fault_server.streamed < 32 << 20  # the client hung up long before the end


async def test_declared_length_over_the_limit_is_refused_before_reading(
    fault_server: FaultServer,
) -> None:
    err = await fail_with(fault_server.url("/huge-declared"), af.HttpFetcher(max_bytes=1 << 20))
    assert isinstance(err, af.HttpError) and err.kind == "too_large" and err.status == 200
    assert "body of 67,108,864 bytes is larger than max_bytes=1,048,576" in str(err)


async def test_wrong_content_type_is_refused(fault_server: FaultServer) -> None:
    err = await fail_with(fault_server.url("/html"), af.HttpFetcher(retry=FAST))
    assert isinstance(err, af.HttpError) and err.kind == "content_type" and err.attempts == 1
    assert "content type 'text/html' is not one of" in str(err)
    assert fault_server.hits["/html"] == 1


async def test_corrupt_jpeg_raises_decode_error_naming_the_url(fault_server: FaultServer) -> None:
    url = fault_server.url("/corrupt.jpg")
    fetcher = af.HttpFetcher(retry=FAST)
    with pytest.raises(af.DecodeError, match=rf"^cannot decode {url}: ") as info:
        await collect([url], fetcher, batch_size=1)
    assert info.value.source == url and info.value.key == url
    assert fault_server.hits["/corrupt.jpg"] == 1


async def test_decompression_bomb_is_refused_before_decoding(fault_server: FaultServer) -> None:
    url = fault_server.url("/bomb.png")
    with pytest.raises(af.DecodeError, match="10,000,000,000 pixels is more than max_pixels"):
        await collect([url], af.HttpFetcher(), batch_size=1)


async def test_max_errors_skips_failed_keys(fault_server: FaultServer) -> None:
    good = [fault_server.url(f"/png/{i}") for i in range(10)]
    bad = [
        fault_server.url("/status/404"),
        fault_server.url("/html"),
        fault_server.url("/bomb.png"),
    ]
    keys = [*good[:4], bad[0], *good[4:7], bad[1], bad[2], *good[7:]]
    batches, feed = await collect(keys, af.HttpFetcher(retry=FAST), batch_size=4, max_errors=3)
    assert sum(b.rows for b in batches) == 10
    stats = feed.stats()
    assert stats.fetch_errors == 3 and stats.rows_delivered == 10
    (host,) = stats.hosts.values()
    assert host["errors"] == {"http_404": 1, "content_type": 1, "decode": 1}


async def test_more_errors_than_max_errors_stop_the_feed(fault_server: FaultServer) -> None:
    keys = [fault_server.url("/status/404")] * 3
    with pytest.raises(af.FetchError, match="3 failed fetches exceed max_errors=2"):
        await collect(keys, af.HttpFetcher(retry=FAST), batch_size=1, max_errors=2, concurrency=1)


async def test_concurrency_is_reached_and_bounded_by_the_connector(
    fault_server: FaultServer,
) -> None:
    fault_server.latency = 0.1
    keys = [fault_server.url(f"/png/{i % 4}") for i in range(64)]
    batches, _ = await collect(keys, af.HttpFetcher(), batch_size=16, concurrency=16)
    assert sum(b.rows for b in batches) == 64
    assert fault_server.peak == 16


async def test_keep_alive_reuses_one_connection_also_after_an_error_status(
    fault_server: FaultServer,
) -> None:
    fault_server.plan("/png/6", ("status", 503), ("status", 500))
    keys = [fault_server.url(f"/png/{i}") for i in range(8)]
    batches, _ = await collect(keys, af.HttpFetcher(retry=FAST), batch_size=8, concurrency=1)
    assert batches[0].rows == 8 and sum(fault_server.hits.values()) == 10
    assert len(fault_server.peers) == 1


async def test_session_is_created_on_open_and_closed_after_stop(fault_server: FaultServer) -> None:
    fetcher = af.HttpFetcher()
    assert fetcher.session is None
    feed = af.Feed(
        fetcher.seed(itertools.repeat(fault_server.url("/png/0"))),
        blobs=["data"],
        batch_size=4,
        concurrency=3,
        log_interval=None,
    )
    async with feed:
        await anext(feed)
        session = fetcher.session
        assert session is not None and not session.closed
        assert session.connector is not None and session.connector.limit == 3
    assert session.closed and fetcher.session is None and not fetcher.is_open


async def test_a_users_session_is_shared_and_left_open(fault_server: FaultServer) -> None:
    async with aiohttp.ClientSession() as session:
        fetcher = af.HttpFetcher(session=session)
        batches, _ = await collect([fault_server.url("/png/2")], fetcher, batch_size=1)
        assert batches[0].rows == 1 and not session.closed
        async with session.get(fault_server.url("/png/2")) as resp:  # still usable
            assert resp.status == 200


async def test_only_http_and_https_urls_are_fetched(fault_server: FaultServer) -> None:
    err = await fail_with("file:///etc/passwd", af.HttpFetcher())
    assert isinstance(err, af.HttpError) and err.kind == "url" and err.attempts == 0
    assert (
        str(err) == "GET file:///etc/passwd refused: only absolute http and https URLs are fetched"
    )


async def test_fetcher_used_outside_a_feed_opens_lazily_and_aclose_closes_it(
    fault_server: FaultServer,
) -> None:
    fetcher = af.HttpFetcher()
    chunk = await fetcher((fault_server.url("/png/0"), 7))  # opens on this loop
    session = fetcher.session
    assert session is not None and fetcher.is_open
    body = await fetcher.fetch_bytes(fault_server.url("/png/0"))
    await fetcher.aclose()
    assert session.closed and not fetcher.is_open
    assert chunk[0].shape == (1, PNG_SIZE, PNG_SIZE, 3) and chunk[1].tolist() == [7]
    assert body.startswith(b"\x89PNG")
    async with fetcher:  # reopens cleanly
        assert fetcher.session is not None and fetcher.session is not session


async def test_a_seed_feed_over_an_exhausted_iterator_says_so(fault_server: FaultServer) -> None:
    fetcher = af.HttpFetcher()
    feed = af.Feed(
        fetcher.seed([fault_server.url("/png/0")]), blobs=["data"], batch_size=2, concurrency=1
    )
    with pytest.raises(af.FetchError, match="key iterator of a seed-style feed is exhausted"):
        async with feed:
            async for _ in feed:
                pass
