"""Fetch workers (fetch.py): what a worker holds between calls."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.bridge import to_thread

pytestmark = pytest.mark.timeout(20)


class FirstChunkWatch:
    """A fetcher whose first call returns a one-row chunk (watched through a weak reference)
    and whose second call blocks until released: is the first chunk still held meanwhile?"""

    def __init__(self) -> None:
        self.first: weakref.ref[np.ndarray] | None = None
        self.in_second = threading.Event()
        self.release = threading.Event()

    def make(self, calls: int) -> list[np.ndarray] | None:
        if calls == 0:
            row = np.arange(4, dtype=np.float32)[None]
            self.first = weakref.ref(row)
            return [row]
        self.in_second.set()
        assert self.release.wait(10)
        return None

    def first_alive(self) -> bool:
        gc.collect()
        assert self.first is not None
        return self.first() is not None


async def wait_for(event: threading.Event) -> None:
    assert await to_thread(event.wait, 10, name="test-wait")


@pytest.mark.parametrize("flavour", ["async", "sync", "keyed-async", "keyed-sync"])
async def test_a_worker_holds_no_chunk_while_its_next_call_runs(flavour: str) -> None:
    """Each worker held its last chunk (a decoded image, say) until its next call returned:
    ``concurrency`` chunks more than the queues account for."""
    watch = FirstChunkWatch()
    calls = [0]

    def sync_fetch(*_: Any) -> list[np.ndarray] | None:
        calls[0] += 1
        return watch.make(calls[0] - 1)

    async def async_fetch(*_: Any) -> list[np.ndarray] | None:
        calls[0] += 1
        if calls[0] == 1:
            return watch.make(0)
        watch.in_second.set()
        await wait_for(watch.release)
        return None

    fn = async_fetch if flavour.endswith("async") else sync_fetch
    if flavour.startswith("keyed"):
        feed = af.Feed.from_keys([0, 1], fn, blobs=["x"], batch_size=1, concurrency=1)
    else:
        feed = af.Feed(fn, blobs=["x"], batch_size=1, concurrency=1, max_buffered_chunks=2)
    try:
        async with feed:
            batch = await anext(feed)  # a view of the first chunk (one chunk, one batch)
            assert batch["x"].tolist() == [[0, 1, 2, 3]]
            del batch
            await wait_for(watch.in_second)  # the worker queued the chunk, then awaited
            assert not watch.first_alive()
    finally:
        watch.release.set()
