"""HttpFetcher against a service that serves 32 requests at once (429 + ``Retry-After: 1``
beyond), over a longer run than ``make bench``'s window: ``Adaptive()`` or a fixed
concurrency, rows/s from the warm-up on and the 429s of the whole run.

    python -m benchmarks.probes.throttled_long [adaptive|CONCURRENCY] [SECONDS]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time

import asyncfeed as af
from asyncfeed.fetchers.http import HttpFetcher
from asyncfeed.fetchers.service import ImageService

K = 32
WARMUP_S = 3.0


async def measure(concurrency: int | af.Adaptive, seconds: float) -> str:
    async with ImageService(count=256, size=256, latency_ms=20, max_concurrent=K) as service:
        urls = (service.url_template.format(i=i % 256) for i in itertools.count())
        feed = af.Feed.from_keys(
            urls, HttpFetcher(), blobs=["image"], batch_size=32, concurrency=concurrency,
            log_interval=None,
        )  # fmt: skip
        rows, since, elapsed = 0, None, 0.0
        async with feed:
            start = time.perf_counter()
            async for batch in feed:
                elapsed = time.perf_counter() - start
                if since is None and elapsed >= WARMUP_S:
                    since, rows = elapsed, 0
                rows += batch.rows
                if elapsed > seconds:
                    break
        (host,) = feed.stats().hosts.values()
        requests = int(host["requests"])
    assert since is not None, "the run ended within its warm-up"
    return (
        f"{concurrency}: {rows / (elapsed - since):.0f} rows/s over [{WARMUP_S:g}, {seconds:g}] s;"
        f" 429s {service.throttled} of {requests} requests ({service.throttled / requests:.2%})"
    )


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "adaptive"
    seconds = float(argv[1]) if len(argv) > 1 else 60.0
    concurrency: int | af.Adaptive = af.Adaptive() if which == "adaptive" else int(which)
    print(asyncio.run(measure(concurrency, seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
