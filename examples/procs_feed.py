"""``processes=N``: fetchers in two worker processes, batches in this one.

Run with ``python examples/procs_feed.py``. The fetcher is a class at module level, so the
``spawn``ed workers can import it; it opens its "session" lazily, inside the worker's own
event loop, and closes it when the worker stops (``aclose``).
"""

from __future__ import annotations

import asyncio
import os

import numpy as np

import asyncfeed as af


class Images:
    """Pretend remote images: ``fetch_one(key)`` returns one decoded image and its label."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._session: asyncio.Semaphore | None = None  # stands in for an aiohttp session

    async def __call__(self, key: int) -> list[np.ndarray]:
        if self._session is None:  # created in the worker's loop, on first use
            self._session = asyncio.Semaphore(16)
        async with self._session:
            await asyncio.sleep(0.002)  # network latency
        image = np.full((1, 3, self.size, self.size), key % 256, np.uint8)
        return [image, np.array([key], np.int64)]

    async def aclose(self) -> None:
        self._session = None  # an aiohttp session would be closed here

    def __getstate__(self) -> dict[str, object]:
        return {"size": self.size, "_session": None}  # sessions never travel


def seed(worker_index: int) -> None:
    np.random.seed(1234 + worker_index)


async def main() -> None:
    feed = af.Feed.from_keys(
        range(2000),
        Images(),
        blobs=["data", "label"],
        batch_size=32,
        concurrency=64,
        ordered=True,
        processes=2,
        worker_init=seed,
        log_interval=None,
    )
    rows = 0
    async with feed:
        async for batch in feed:
            rows += batch.rows
    stats = feed.stats()
    print(f"pid {os.getpid()}: {rows} rows in {stats.batches_delivered} batches, in key order")


if __name__ == "__main__":
    asyncio.run(main())
