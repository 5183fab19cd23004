"""Shared fixtures: leak checks on every test, counter-based sources whose rows are identifiable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from asyncfeed import Batch, FeedStats, ImageService
from tests.httpserver import FaultServer

LEAK_GRACE_S = 3.0


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a thread behind (threads get a few seconds to finish)."""
    before = set(threading.enumerate())
    yield
    extra = [t for t in threading.enumerate() if t not in before]
    for thread in extra:
        thread.join(LEAK_GRACE_S)
    alive = [t.name for t in extra if t.is_alive()]
    assert not alive, f"threads left behind: {alive}"


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves a task running on its loop."""
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left behind: {[t.get_name() for t in left]}"


class CounterSource:
    """Thread-safe source of identifiable rows: ``ids`` int64 and ``x`` float32[n, 4] == id.

    ``chunk(n)`` returns the next ``n`` ids as a chunk in blob order (``ids``, ``x``).
    """

    blobs = ("ids", "x")

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self._lock = threading.Lock()
        self.issued = 0

    def chunk(self, n: int) -> list[np.ndarray]:
        with self._lock:
            start = self._next
            self._next += n
            self.issued += n
        ids = np.arange(start, start + n, dtype=np.int64)
        return [ids, np.repeat(ids.astype(np.float32)[:, None], 4, axis=1)]


@pytest.fixture
def counter() -> CounterSource:
    return CounterSource()


def check_batch(batch: Batch, batch_size: int) -> list[int]:
    """Assert a batch is well formed and self-consistent; return its ids."""
    ids = batch["ids"]
    x = batch["x"]
    assert ids.dtype == np.int64
    assert x.dtype == np.float32
    assert ids.shape == (batch.rows,)
    assert x.shape == (batch.rows, 4)
    assert batch.rows <= batch_size
    assert np.array_equal(x, np.repeat(ids.astype(np.float32)[:, None], 4, axis=1))
    return [int(i) for i in ids]


def check_accounting(stats: FeedStats) -> None:
    """The invariant every snapshot keeps."""
    assert stats.rows_fetched == stats.rows_delivered + stats.rows_dropped + stats.rows_in_flight
    assert stats.rows_dropped == sum(stats.dropped_by_cause.values())
    assert min(stats.rows_in_flight, stats.rows_delivered, stats.rows_dropped) >= 0


# -- HTTP and image-service fixtures (issue 4) --------------------------------------------------


@pytest.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    """The scripted aiohttp server of ``tests/httpserver.py`` on 127.0.0.1."""
    server = FaultServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
async def png_service() -> AsyncIterator[ImageService]:
    """An embedded image service with 16 lossless 32x32 PNGs."""
    async with ImageService(count=16, size=32, fmt="png") as svc:
        yield svc
