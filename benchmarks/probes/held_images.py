"""HttpFetcher from the embedded image service (20 ms latency): rows/s, decoded images alive
and peak RSS by concurrency.

    python -m benchmarks.probes.held_images [CONCURRENCY ...]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import weakref
from typing import Any

import asyncfeed as af
import asyncfeed.fetchers.transform as http_module
from asyncfeed.fetchers.service import ImageService

_live = [0]
_decode = http_module.decode_image


def _release() -> None:
    _live[0] -= 1


def counted_decode(*args: Any, **kwargs: Any) -> Any:
    image = _decode(*args, **kwargs)
    _live[0] += 1
    weakref.finalize(image, _release)
    return image


def rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


async def measure(url: str, concurrency: int, seconds: float = 6.0) -> str:
    keys = (f"{url}/img/{i % 300}.jpg" for i in itertools.count())
    feed = af.Feed.from_keys(
        keys,
        http_module.HttpFetcher(),
        blobs=["image"],
        batch_size=32,
        concurrency=concurrency,
        log_interval=None,
    )
    batches = peak_rss = 0
    alive: list[int] = []
    async with feed:
        start = time.monotonic()
        async for _ in feed:
            batches += 1
            peak_rss = max(peak_rss, rss_mb())
            alive.append(_live[0])
            if time.monotonic() - start > seconds:
                break
        elapsed = time.monotonic() - start
    alive.sort()
    return (
        f"concurrency {concurrency}: {batches * 32 / elapsed:.0f} rows/s, decoded images alive "
        f"median {alive[len(alive) // 2]}, peak RSS {peak_rss} MB"
    )


async def main(levels: list[int]) -> None:
    http_module.decode_image = counted_decode
    async with ImageService(count=300, latency_ms=20) as service:
        for concurrency in levels:
            print(await measure(service.url, concurrency))


if __name__ == "__main__":
    asyncio.run(main([int(c) for c in sys.argv[1:]] or [64, 256]))
