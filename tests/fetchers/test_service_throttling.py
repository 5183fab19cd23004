"""ImageService's throttling modes: max_concurrent (429 + Retry-After) and max_rate (bare 429)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

import asyncfeed as af
from benchmarks.http_bench import serve_in_subprocess

pytestmark = pytest.mark.timeout(30)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None, float]:
    start = time.monotonic()
    async with session.get(url) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After"), time.monotonic() - start


async def test_max_concurrent_refuses_above_k_with_retry_after() -> None:
    service = af.ImageService(count=4, size=8, latency_ms=300, max_concurrent=3, retry_after=2)
    async with service, aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(get(session, u) for u in service.urls(5)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 200, 200, 429, 429]
    assert {after for status, after, _ in answers if status == 429} == {"2"}
    assert {after for status, after, _ in answers if status == 200} == {None}
    assert service.throttled == 2 and service.peak_in_flight == 3 and service.requests == 5
    service.reset_counters()
    assert service.throttled == 0


async def test_max_concurrent_latency_rises_with_load() -> None:
    service = af.ImageService(count=4, size=8, latency_ms=200, max_concurrent=2)
    async with service, aiohttp.ClientSession() as session:
        (_, _, alone), *_ = await asyncio.gather(get(session, service.urls(1)[0]))
        both = await asyncio.gather(*(get(session, u) for u in service.urls(2)))
    assert alone >= 0.2
    assert max(took for _, _, took in both) >= 0.2 * 1.25  # the second in flight: slower


async def test_max_rate_refuses_without_retry_after() -> None:
    async with af.ImageService(count=4, size=8, max_rate=1) as service:
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(get(session, u) for u in service.urls(6)))
        ok = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] == 429]
        assert 1 <= len(ok) <= 2 and len(ok) + len(refused) == 6  # one token, 1/s refill
        assert all(after is None for _, after, _ in refused)
        assert service.throttled == len(refused)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurrent": 0}, r"^max_concurrent must be >= 1, got 0$"),
        ({"max_rate": 0}, r"^max_rate must be a finite number > 0 or None, got 0$"),
        ({"max_rate": float("inf")}, r"^max_rate must be a finite number > 0 or None, got inf$"),
        ({"retry_after": -1}, r"^retry_after must be >= 0, got -1$"),
    ],
)
def test_throttling_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.ImageService(**kwargs)  # type: ignore[arg-type]


def test_serve_images_takes_the_throttling_flags() -> None:
    with serve_in_subprocess(0.0, count=2, size=8, flags=["--max-rate=0.2"]) as template:
        url = template.format(i=0)

        async def twice() -> list[tuple[int, str | None, float]]:
            async with aiohttp.ClientSession() as session:
                return [await get(session, url) for _ in range(2)]

        (first, _, _), (second, after, _) = asyncio.run(twice())
        assert (first, second, after) == (200, 429, None)
