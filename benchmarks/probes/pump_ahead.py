"""Sync 1-row fetcher, concurrency 4, batch 256: rows/s and CPU per row by ``pump_ahead``.

python -m benchmarks.probes.pump_ahead [BATCHES] [AHEAD ...]
"""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np

import asyncfeed as af
import asyncfeed.feed as feed_module

ROW = np.zeros((1, 16), np.float32)


def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
    return [ROW]


async def measure(batches: int) -> tuple[float, float]:
    feed = af.Feed(fetch, blobs=["x"], batch_size=256, concurrency=4, log_interval=None)
    async with feed:
        for _ in range(20):
            await anext(feed)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            await anext(feed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = batches * 256
    return rows / wall, cpu / rows * 1e6


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for ahead in [int(a) for a in sys.argv[2:]] or [1, 2, 4, 8, 16, 32]:
        feed_module.pump_ahead = lambda chunks, concurrency, ahead=ahead: ahead  # type: ignore[misc]
        rate, cpu = asyncio.run(measure(batches))
        print(f"pump_ahead={ahead}: {rate / 1e3:.0f}k rows/s, {cpu:.2f} CPU µs/row")


if __name__ == "__main__":
    main()
