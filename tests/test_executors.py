"""Sync fetchers in the default thread pool, a user's thread pool and a process pool."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import asyncfeed as af
from tests import pool_fetchers as fetchers
from tests.conftest import CounterSource, check_accounting


def test_sync_fetchers_run_on_named_daemon_threads(counter: CounterSource) -> None:
    names: set[str] = set()
    lock = threading.Lock()

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        with lock:
            names.add(threading.current_thread().name)
        return counter.chunk(5)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=16, concurrency=3, source="thr")
    feed.start()
    seen = []
    for _ in range(50):
        seen += feed.get(timeout=5)["ids"].tolist()
    feed.stop()
    assert len(set(seen)) == 800
    assert names and all(n.startswith("asyncfeed-thr-fetch-") for n in names)
    check_accounting(feed.stats())


async def test_sync_fetcher_in_a_user_thread_pool(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    with ThreadPoolExecutor(2) as pool:
        feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, executor=pool)
        async with feed:
            rows = [b.rows for b in [await anext(feed) for _ in range(20)]]
    assert rows == [8] * 20


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_sync_fetcher_in_a_process_pool() -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        feed = af.Feed(
            fetchers.pid_rows, blobs=["w", "pid"], batch_size=6, concurrency=2, executor=pool
        )
        async with feed:
            batches = [await anext(feed) for _ in range(20)]
    pids = {int(p) for b in batches for p in b["pid"]}
    assert os.getpid() not in pids and len(pids) >= 1
    assert {int(w) for b in batches for w in b["w"]} <= set(feed.worker_ids)
    check_accounting(feed.stats())


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_dead_worker_process_surfaces_as_fetch_error() -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        feed = af.Feed(fetchers.crash, blobs=["x"], batch_size=4, concurrency=1, executor=pool)
        with pytest.raises(af.FetchError, match="BrokenProcessPool") as info:
            async with feed:
                await anext(feed)
    assert info.value.worker_id == feed.worker_ids[0]
