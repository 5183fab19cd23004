"""HttpFetcher's retries against a real aiohttp server: which statuses, Retry-After, the
deadline, and the messages when retrying ends."""

from __future__ import annotations

import re
from typing import Any

import pytest

import asyncfeed as af
from tests.httpserver import FaultServer

pytestmark = pytest.mark.timeout(20)


async def fetch(url: str, **kw: Any) -> list[Any]:
    feed = af.Feed.from_keys(
        [url], af.HttpFetcher(**kw), blobs=["data"], batch_size=1, log_interval=None
    )
    async with feed:
        return [b async for b in feed]


async def failure(url: str, **kw: Any) -> af.HttpError:
    with pytest.raises(af.HttpError) as info:
        await fetch(url, **kw)
    return info.value


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413])
async def test_4xx_other_than_408_and_429_is_never_retried(
    fault_server: FaultServer, status: int
) -> None:
    url = fault_server.url(f"/status/{status}")
    err = await failure(url)  # the default policy: it would retry for a minute
    assert (err.status, err.attempts) == (status, 1)
    assert fault_server.hits[f"/status/{status}"] == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_408_429_and_5xx_are_retried(fault_server: FaultServer, status: int) -> None:
    fault_server.plan("/png/1", ("status", status), ("status", status))
    batches = await fetch(fault_server.url("/png/1"), retry=af.Retry(backoff=0.001))
    assert batches[0].rows == 1 and fault_server.hits["/png/1"] == 3


async def test_retry_after_is_honoured_beyond_max_delay(fault_server: FaultServer) -> None:
    fault_server.plan("/png/2", ("status", 503, {"Retry-After": "1"}))
    retry = af.Retry(backoff=0.001, max_delay=0.01)
    batches = await fetch(fault_server.url("/png/2"), retry=retry)
    first, second = fault_server.times["/png/2"]
    assert batches[0].rows == 1 and second - first >= 0.95


async def test_a_retry_after_past_the_deadline_ends_the_retries_at_once(
    fault_server: FaultServer,
) -> None:
    fault_server.plan("/png/3", ("status", 429, {"Retry-After": "3600"}))
    url = fault_server.url("/png/3")
    err = await failure(url, retry=af.Retry(deadline=30.0))
    assert err.attempts == 1 and fault_server.hits["/png/3"] == 1
    assert re.fullmatch(
        rf"GET {re.escape(url)} failed after 1 attempt \(Retry-After 3600 s ends past the "
        r"retry deadline, \d+\.\d s away\): HTTP 429 Too Many Requests",
        str(err),
    ), str(err)


async def test_the_deadline_ends_retries_that_attempts_would_allow(
    fault_server: FaultServer,
) -> None:
    url = fault_server.url("/status/503")
    retry = af.Retry(attempts=10_000, backoff=0.01, max_delay=0.05, deadline=0.5)
    err = await failure(url, retry=retry)
    assert 3 <= err.attempts < 10_000 and err.status == 503
    assert re.fullmatch(
        rf"GET {re.escape(url)} failed after \d+ attempts in \d+\.\d s \(retry deadline 0\.5 s\): "
        r"HTTP 503 Service Unavailable",
        str(err),
    ), str(err)


async def test_a_refused_connection_is_retried_until_the_deadline(
    fault_server: FaultServer,
) -> None:
    await fault_server.aclose()  # nothing listens on its port any more
    url = fault_server.url("/png/0")
    err = await failure(url, retry=af.Retry(backoff=0.01, max_delay=0.05, deadline=0.3))
    assert err.kind == "connection" and err.status is None and err.attempts >= 3
    assert "(retry deadline 0.3 s): no response (status none), ClientConnectorError" in str(err)
